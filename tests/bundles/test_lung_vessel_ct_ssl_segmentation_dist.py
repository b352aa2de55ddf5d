"""Multi-process training of the lung-vessel bundle: torchrun with 2 processes and gloo on the CPU."""

from __future__ import annotations

import pytest

from medssl.checkpoints import load_state_dict_file

BUNDLE = "lung_vessel_ct_ssl_segmentation"


@pytest.mark.dist
@pytest.mark.parametrize("method", ["bpl"])
def test_torchrun_two_processes(lung_data, tmp_path, run_bundle_dist, method):
    out = tmp_path / "run"
    overrides = {
        "bundle_root": out, "dataset_dir": lung_data / "data", "epochs": 2, "val_interval": 1, "roi_size": "[16,16,16]",
        "num_workers": 0, "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25, "ssl_method": method,
        "method#warmup": 0, "method#ramp": 0,
    }  # fmt: skip
    run_bundle_dist(BUNDLE, overrides, 29517)
    ckpt = load_state_dict_file(out / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]
    # the DDP wrapper is saved as the plain network, so the weights load into the single-process bundle
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (out / "models" / "model_best.pt").is_file()
