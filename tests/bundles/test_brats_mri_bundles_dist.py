"""Multi-process training of the BraTS bundles: torchrun, 2 processes, gloo on the CPU (slow: `make test-all`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medssl.checkpoints import load_state_dict_file

TINY_NET = {"network_channels": "[4,8,16,32]", "embed_dim": "32", "num_layers": "1", "num_heads": "2", "mlp_dim": "64"}
NET = [arg for key, value in TINY_NET.items() for arg in (f"--{key}", value)]


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize(
    "bundle, data, roi, port",
    [
        ("brats_mri_transbts_ssl_segmentation", "brats_data", "[32,32,32]", 29527),
        ("brats_mri_axial_slices_ssl_segmentation", "brats2d_data", "[32,32]", 29528),
    ],
)
def test_torchrun_two_processes_bpl(request, tmp_path, bundles_dir, bundle, data, roi, port):
    root = request.getfixturevalue(data)
    datalist = root / "data" / "dataset.json" if data == "brats_data" else root / "slices" / "datalist.json"
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']",
        "--logging_file", "configs/logging.conf",
        "--bundle_root", str(out), "--datalist", str(datalist),
        "--epochs", "2", "--val_interval", "1", "--roi_size", roi, *NET, "--num_workers", "0", "--cache_rate", "0",
        "--labeled_fraction", "0.5", "--val_fraction", "0.25", "--test_fraction", "0.25",
        "--ssl_method", "bpl", "--method#warmup", "0", "--method#ramp", "0",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=bundles_dir / bundle, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("SemiSupervisedTrainer - INFO - Engine run finished") == 2
    ckpt = load_state_dict_file(out / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert not any(k.startswith("module.") for k in ckpt["threshold_head"])
