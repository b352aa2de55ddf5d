"""Multi-process training of the ACDC and LA bundles from the source tree: torchrun, 2 processes, gloo on the CPU
(slow: `make test-all`; the same commands run from an exported bundle of the wheel in the default suite,
test_bundles_from_the_wheel.py)."""

from __future__ import annotations

import pytest

from medssl.checkpoints import load_state_dict_file

UNET = {"network_channels": "[4,8,16,32,64]", "num_res_units": "0", "iterations": "2", "val_interval": "2",
        "num_workers": "0", "ssl_method": "fixmatch", "method#warmup": "0", "method#ramp": "0"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("bundle, port", [("acdc_mri_ssl_segmentation", 29537), ("la_mri_ssl_segmentation", 29538)])
def test_torchrun_two_processes(request, tmp_path, run_bundle_dist, bundle, port):
    if bundle.startswith("acdc"):
        data = request.getfixturevalue("acdc_data")
        settings = {"dataset_dir": str(data), "roi_size": "[32,32]", "batch_size": "2", "unlabeled_batch_size": "2"}
    else:  # the real LA sample: 1 validation volume for 2 processes, validated whole by each
        data = request.getfixturevalue("la_data")
        settings = {"dataset_dir": str(data), "datalist": str(data / "datalist_ssl.json"), "roi_size": "[32,32,32]",
                    "scale": "0.5", "batch_size": "1", "unlabeled_batch_size": "1", "num_samples": "1"}  # fmt: skip
    out = tmp_path / "run"
    run_bundle_dist(bundle, {"bundle_root": out, **UNET, **settings}, port)
    ckpt = load_state_dict_file(out / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (out / "models" / "model.pt").is_file()
