"""The example script of docs/api.md runs as written: each method trains and is scored on held-out cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from medssl.data.datalist import load_datalist

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_ssl.py"


def _example():
    spec = importlib.util.spec_from_file_location("train_ssl_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [["--method", "bpl", "--threshold-fit", "elbo"], ["--method", "teacher_student"]])
def test_example_trains_and_scores(args, tmp_path):
    tiny = ["--cases", "8", "--size", "32", "--roi", "16", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]
    dice = _example().main(args + tiny)
    per_case = pd.read_csv(tmp_path / "test" / "per_case.csv")
    assert len(per_case) == 2  # 25% of 8 cases are held out
    assert dice == pytest.approx(per_case.filter(like="dice").iloc[:, 0].mean(), abs=1e-6)
    if "teacher_student" in args:  # the student trained on the teacher's pseudo-label of every unlabelled case
        student = load_datalist(tmp_path / "teacher" / "datalist.json")
        assert student["unlabeled"] and all(Path(e["pseudo_label"]).is_file() for e in student["unlabeled"])
