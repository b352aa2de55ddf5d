"""The accuracy benchmark and the runs it repeats, on tiny synthetic data."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from medssl.bench.accuracy import run_accuracy
from medssl.bench.accuracy_report import summarize
from medssl.workflows.runs import train_method
from medssl.bench.measure import machine_info
from medssl.bench.presets import PRESETS, Preset, TaskSetting
from medssl.bench.robustness import rescore_robustness, robustness
from medssl.workflows.tasks import METHODS, reads_pseudo_labels, run_settings
from medssl.data.split import split_datalist_file
from medssl.data.synthetic import synthesize

TINY_LUNG = {
    "roi_size": [16, 16, 16],
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 1,
    "feature_channels": 8,
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_samples": 1,
    "learning_rate": 0.003,
}


@pytest.fixture(scope="module")
def lung(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_lung")
    dataset = synthesize("lung_vessel", cases=8, size=32, seed=0, out=root / "data")
    split = split_datalist_file(dataset, root / "split.json", 0.5, val_fraction=0.15, test_fraction=0.25, seed=0)
    return root, dataset, split


def test_train_method_runs_the_budget_and_scores_the_best_checkpoint(lung, tmp_path):
    _, _, split = lung
    result = train_method("lung_vessel", "bpl_kl_only", split, tmp_path / "run", 6, 3, TINY_LUNG, "cpu")
    assert result.iterations == 6
    assert [v["iteration"] for v in result.val_curve] == [2, 4, 6]
    assert len(result.train_curve) == 6 and all(math.isfinite(r["loss"]) for r in result.train_curve)
    assert all(0 <= r["threshold_mean"] <= 1 for r in result.train_curve)  # the learned threshold is recorded
    per_case = pd.read_csv(tmp_path / "run" / "test" / "per_case.csv")
    assert len(per_case) == 2  # 25% of 8 cases held out for testing
    assert result.test_dice["mean"] == pytest.approx(per_case.filter(like="dice").iloc[:, 0].mean(), abs=1e-5)
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert set(best) >= {"model", "threshold_head"}


def test_train_method_rejects_a_budget_smaller_than_its_validations(lung, tmp_path):
    with pytest.raises(ValueError, match="iterations"):
        train_method("lung_vessel", "segpl", lung[2], tmp_path, iterations=2, evaluations=3)


def test_robustness_at_zero_strength_is_the_clean_test_dice_and_resume_skips_finished_runs(lung, tmp_path):
    _, dataset, _ = lung
    preset = Preset(
        tasks={"lung_vessel": TaskSetting(cases=8, size=32, iterations=4, overrides=TINY_LUNG, evaluations=2)},
        fractions=(0.5,),
        seeds=(0,),
        methods=("lower_bound", "upper_bound", "ts_gce"),
        noise_std=(0.0, 0.5),
        fgsm_eps=(0.0, 0.5),
    )
    runs, robust = run_accuracy(preset, tmp_path / "acc", datalist=str(dataset), device="cpu")
    assert sorted(runs["method"]) == ["lower_bound", "ts_gce", "upper_bound"]
    assert (runs["iterations"] == 4).all()  # the same budget for every method
    assert runs.loc[runs.method == "upper_bound", "labeled_fraction"].item() == 1.0
    for method, row in runs.set_index("method").iterrows():
        clean = robust[(robust.method == method) & (robust.level == 0.0)]
        assert len(clean) == 2  # noise 0 and FGSM 0
        assert clean["dice"].to_numpy() == pytest.approx([row["dice_mean"]] * 2, abs=1e-5)
    # teacher-student students read the lower bound's pseudo-labels
    assert list((tmp_path / "acc" / "lung_vessel" / "seed0" / "frac0.50" / "teacher").rglob("*.nii.gz"))
    for name in ("runs.csv", "robustness.csv", "table.md", "dice_vs_fraction.png", "robustness.png"):
        assert (tmp_path / "acc" / name).is_file()
    stamp = (tmp_path / "acc" / "lung_vessel" / "seed0" / "upper_bound" / "result.json").stat().st_mtime_ns
    runs_again, _ = run_accuracy(preset, tmp_path / "acc", datalist=str(dataset), device="cpu")
    assert len(runs_again) == 3
    assert (tmp_path / "acc" / "lung_vessel" / "seed0" / "upper_bound" / "result.json").stat().st_mtime_ns == stamp
    # rescoring from the best checkpoints (no training) gives the same robustness rows
    rescored = rescore_robustness(preset, tmp_path / "acc", device="cpu")
    key = ["method", "perturbation", "level"]
    pd.testing.assert_frame_equal(
        rescored.sort_values(key)[key + ["dice"]].reset_index(drop=True),
        robust.sort_values(key)[key + ["dice"]].reset_index(drop=True),
        check_dtype=False, atol=1e-5,
    )  # fmt: skip


def test_summary_table_and_gap_closed(tmp_path):
    rows = []
    for seed, (lo, up, me) in enumerate([(0.4, 0.8, 0.6), (0.5, 0.7, 0.56)]):
        rows += [
            {
                "task": "lung_vessel",
                "method": "lower_bound",
                "seed": seed,
                "labeled_fraction": 0.3,
                "dice_mean": lo,
                "iterations": 5,
            },
            {
                "task": "lung_vessel",
                "method": "upper_bound",
                "seed": seed,
                "labeled_fraction": 1.0,
                "dice_mean": up,
                "iterations": 5,
            },
            {
                "task": "lung_vessel",
                "method": "segpl",
                "seed": seed,
                "labeled_fraction": 0.3,
                "dice_mean": me,
                "iterations": 5,
            },
        ]
    summarize(pd.DataFrame(rows), pd.DataFrame(), tmp_path, PRESETS["small"], "small", 1.0)
    table = (tmp_path / "table.md").read_text()
    # mean (sd) over seeds: segpl 0.580 (0.028); gap closed: mean of 0.5 and 0.3
    assert "| segpl | 0.580 (0.028) |" in table
    assert "| upper_bound | 0.750 (0.071) |" in table
    assert "| segpl | +40% |" in table
    assert json.loads((tmp_path / "run_info.json").read_text())["machine"].keys() == machine_info().keys()


def test_gap_closed_is_not_applicable_without_a_gap(tmp_path):
    rows = [
        {"task": "lung_vessel", "method": "lower_bound", "seed": 0, "labeled_fraction": 0.3, "dice_mean": 0.5, "iterations": 5},
        {"task": "lung_vessel", "method": "upper_bound", "seed": 0, "labeled_fraction": 1.0, "dice_mean": 0.505, "iterations": 5},
        {"task": "lung_vessel", "method": "segpl", "seed": 0, "labeled_fraction": 0.3, "dice_mean": 0.3, "iterations": 5},
    ]  # fmt: skip
    summarize(pd.DataFrame(rows), pd.DataFrame(), tmp_path, PRESETS["small"], "small", 1.0)
    assert "| segpl | n/a |" in (tmp_path / "table.md").read_text()


def test_presets_cover_the_protocol():
    small = PRESETS["small"]
    # the bounds, the EM pseudo-labels in both threshold modes and teacher-student with every loss; every run
    # name is one the registry knows
    assert set(small.methods) == {"lower_bound", "upper_bound", "segpl", "bpl_kl_only", "bpl_elbo", "ts_ce", "ts_gce",
                                  "ts_bce", "ts_sce"} and set(small.methods) <= set(METHODS)
    assert small.fractions == (0.3, 0.5, 0.7) and len(small.seeds) == 3
    assert set(small.tasks) == {"lung_vessel", "brats2d"}


def test_runs_are_named_through_the_method_registry():
    from medssl.methods import VARIANTS

    assert run_settings("lower_bound") == run_settings("upper_bound") == {"ssl_method": "supervised"}
    assert run_settings("bpl_elbo") == {"ssl_method": "bpl", "method#threshold_fit": "elbo"}
    assert run_settings("ts_gce") == {"ssl_method": "teacher_student", "method#robust_loss": "gce"}
    assert set(METHODS) == {"lower_bound", "upper_bound"} | (set(VARIANTS) - {"supervised"})
    assert [m for m in METHODS if reads_pseudo_labels(m)] == ["ts_ce", "ts_gce", "ts_bce", "ts_sce"]
    with pytest.raises(ValueError, match="method must be one of"):
        run_settings("bpl_typo")


def test_bench_command_rejects_a_bad_fraction(tmp_path):
    import argparse

    from medssl.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["accuracy", "--out", str(tmp_path), "--fraction", "1.5", "--task", "lung_vessel"])
    with pytest.raises(ValueError, match=r"labelled fraction must be in \(0, 1\)"):
        bench.run(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["accuracy", "--method", "bpl_typo"])


class _Parser:
    def __init__(self, values):
        self.values = values

    def get_parsed_content(self, key):
        return self.values[key]


def test_robustness_at_zero_strength_matches_the_evaluators_dice_for_brats_regions():
    """Three region channels: the level-0 Dice is the evaluator's val_mean_dice (per image, then over images)."""
    from types import SimpleNamespace

    from monai.data import DataLoader, Dataset
    from monai.inferers import SlidingWindowInferer
    from monai.losses import DiceCELoss

    from medssl.workflows.evaluation import build_evaluator

    gen = torch.Generator().manual_seed(0)
    cases = []
    for i in range(5):
        label = torch.zeros(1, 16, 16)
        label[0, 4:12, 4:12] = 2  # edema
        label[0, 6:10, 6:10] = 1 if i % 2 else 3  # necrosis or enhancing: ET empty on some slices
        cases.append({"image": torch.randn(4, 16, 16, generator=gen), "label": label})
    torch.manual_seed(0)
    network = torch.nn.Conv2d(4, 4, 3, padding=1).eval()
    wf = SimpleNamespace(parser=_Parser({
        "split": {"testing": cases}, "device": "cpu", "roi_size": [16, 16], "sw_batch_size": 2,
        "loss": DiceCELoss(to_onehot_y=True, softmax=True), "validate#preprocessing": None,
        "validate#inferer": SlidingWindowInferer([16, 16], sw_batch_size=2),
    }))  # fmt: skip
    rows = robustness(network, wf, "brats", noise_std=(0.0,), fgsm_eps=(0.0, 0.5))
    evaluator = build_evaluator(DataLoader(Dataset(cases), batch_size=1), network, [16, 16], task="brats", device="cpu")
    evaluator.run()
    clean = evaluator.state.metrics["val_mean_dice"]
    assert [r["dice"] for r in rows[:2]] == pytest.approx([clean, clean], abs=1e-6)
    assert rows[2]["dice"] != pytest.approx(clean, abs=1e-6)  # the attack changes the prediction


def test_chains_run_side_by_side_and_resume(lung, tmp_path):
    _, dataset, _ = lung
    preset = Preset(
        tasks={"lung_vessel": TaskSetting(cases=8, size=32, iterations=2, overrides=TINY_LUNG, evaluations=1)},
        fractions=(0.5,),
        seeds=(0, 1),
        methods=("lower_bound",),
        noise_std=(0.0,),
        fgsm_eps=(0.0,),
        jobs=2,
    )
    runs, robust = run_accuracy(preset, tmp_path / "acc", datalist=str(dataset), device="cpu")
    assert sorted(runs["seed"]) == [0, 1] and (runs["method"] == "lower_bound").all()
    assert len(robust) == 4  # two seeds x (noise 0, FGSM 0)
    for seed in (0, 1):  # each chain keeps its own rows, so it resumes on its own
        chain = pd.read_csv(tmp_path / "acc" / "lung_vessel" / f"seed{seed}" / "runs.csv")
        assert chain["seed"].tolist() == [seed]
    assert json.loads((tmp_path / "acc" / "run_info.json").read_text())["jobs"] == 2
    result = tmp_path / "acc" / "lung_vessel" / "seed1" / "frac0.50" / "lower_bound" / "result.json"
    stamp = result.stat().st_mtime_ns
    again, _ = run_accuracy(preset, tmp_path / "acc", datalist=str(dataset), device="cpu", jobs=1)
    assert len(again) == 2
    assert result.stat().st_mtime_ns == stamp
