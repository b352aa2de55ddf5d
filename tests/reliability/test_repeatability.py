"""Repeatability on the CPU: the same seed, data and config give identical losses, thresholds and Dice; another seed
gives other numbers. Runs the lung bundle's train.json in this process (Bayesian pseudo-labels, 2 tiny epochs)."""

from __future__ import annotations

import pytest
import torch
from _reliability import LUNG, LUNG_TINY, workflow_of
from ignite.engine import Events

from medssl.engines.keys import SSLKeys


def _run(lung_data, out, seed: int) -> dict[str, list[float]]:
    overrides = {"bundle_root": str(out), "dataset_dir": str(lung_data / "data"), "epochs": 2, "seed": seed,
                 "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25, "ssl_method": "bpl",
                 "method#warmup": 0, "method#ramp": 0, **LUNG_TINY}  # fmt: skip
    wf = workflow_of(LUNG, ["train.json"], overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    record: dict[str, list[float]] = {"loss": [], "supervised": [], "unsupervised": [], "threshold": [], "dice": []}

    def on_iteration(engine):
        out = engine.state.output
        record["loss"].append(float(out[SSLKeys.LOSS]))
        for name in ("supervised", "unsupervised"):
            record[name].append(float(out[SSLKeys.LOSS_TERMS][name]))
        record["threshold"].append(float(torch.as_tensor(out[SSLKeys.THRESHOLD]).float().mean()))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: record["dice"].append(float(e.state.metrics["val_mean_dice"]))
    )
    wf.run()
    wf.finalize()
    assert len(record["dice"]) == 2 and len(record["threshold"]) == len(record["loss"]) > 0
    return record


def test_same_seed_same_numbers_other_seed_other_numbers(lung_data, tmp_path):
    first = _run(lung_data, tmp_path / "a", seed=0)
    second = _run(lung_data, tmp_path / "b", seed=0)
    assert first == second  # bit-identical floats, not approximately equal
    other = _run(lung_data, tmp_path / "c", seed=1)
    for key in ("loss", "threshold"):
        assert other[key] != first[key], key


@pytest.mark.parametrize("seed", [0, 5])
def test_split_and_phantoms_depend_only_on_the_seed(tmp_path, seed):
    from medssl.data.split import split_datalist
    from medssl.data.synthetic import synthesize

    a = synthesize("lung_vessel", cases=3, size=32, seed=seed, out=tmp_path / "a")
    b = synthesize("lung_vessel", cases=3, size=32, seed=seed, out=tmp_path / "b")
    files_a = sorted(p.read_bytes() for p in a.parent.rglob("*.nii.gz"))
    files_b = sorted(p.read_bytes() for p in b.parent.rglob("*.nii.gz"))
    assert files_a == files_b
    dl = {"training": [{"image": f"{i}.nii.gz", "label": f"{i}s.nii.gz"} for i in range(12)]}
    assert split_datalist(dl, 0.5, 0.2, seed=seed) == split_datalist(dl, 0.5, 0.2, seed=seed)
