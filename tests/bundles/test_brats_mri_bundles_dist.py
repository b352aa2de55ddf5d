"""Multi-process training of the BraTS bundles: torchrun, 2 processes, gloo on the CPU (slow: `make test-all`)."""

from __future__ import annotations

import pytest

from medssl.checkpoints import load_state_dict_file

TINY_NET = {"network_channels": "[4,8,16,32]", "embed_dim": "32", "num_layers": "1", "num_heads": "2", "mlp_dim": "64"}


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize(
    "bundle, data, roi, port",
    [
        ("brats_mri_transbts_ssl_segmentation", "brats_data", "[32,32,32]", 29527),
        ("brats_mri_axial_slices_ssl_segmentation", "brats2d_data", "[32,32]", 29528),
    ],
)
def test_torchrun_two_processes_bpl(request, tmp_path, run_bundle_dist, bundle, data, roi, port):
    root = request.getfixturevalue(data)
    datalist = root / "data" / "dataset.json" if data == "brats_data" else root / "slices" / "datalist.json"
    out = tmp_path / "run"
    overrides = {
        "bundle_root": out, "datalist": datalist, "epochs": 2, "val_interval": 1, "roi_size": roi, **TINY_NET,
        "num_workers": 0, "cache_rate": 0, "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25,
        "ssl_method": "bpl", "method#warmup": 0, "method#ramp": 0,
    }  # fmt: skip
    run_bundle_dist(bundle, overrides, port)
    ckpt = load_state_dict_file(out / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert not any(k.startswith("module.") for k in ckpt["threshold_head"])
