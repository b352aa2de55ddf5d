"""Multi-process training of the lung-vessel bundle: torchrun with 2 processes and gloo on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medssl.checkpoints import load_state_dict_file

BUNDLE = "lung_vessel_ct_ssl_segmentation"


@pytest.mark.dist
@pytest.mark.parametrize("method", ["bpl"])
def test_torchrun_two_processes(lung_data, tmp_path, bundles_dir, method):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        "-m", "monai.bundle", "run",
        "--config_file", "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']",
        "--logging_file", "configs/logging.conf",
        "--bundle_root", str(out), "--dataset_dir", str(lung_data / "data"),
        "--epochs", "2", "--val_interval", "1", "--roi_size", "[16,16,16]", "--num_workers", "0",
        "--labeled_fraction", "0.5", "--val_fraction", "0.25", "--test_fraction", "0.25",
        "--ssl_method", method, "--method#warmup", "0", "--method#ramp", "0",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=bundles_dir / BUNDLE, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    # both ranks train; only rank 0 logs statistics and writes checkpoints
    assert log.count("SemiSupervisedTrainer - INFO - Engine run finished") == 2
    ckpt = load_state_dict_file(out / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]
    # the DDP wrapper is saved as the plain network, so the weights load into the single-process bundle
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (out / "models" / "model_best.pt").is_file()
