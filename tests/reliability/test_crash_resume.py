"""Crash and resume: SIGKILL a bundle training and `medssl pseudolabel` mid-run, and a failure inside a checkpoint save.

The kill-and-resume test runs the lung bundle as users run it (``python -m monai.bundle run``) on tiny synthetic data
on the CPU; it must run in CI, so it is small: ten 32^3 cases, 16^3 patches, 4 iterations per epoch, 6 epochs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _reliability import BUNDLES, LUNG, LUNG_TINY, bundle_command, bundle_env, run_bundle

from medssl.checkpoints import load_state_dict_file
from medssl.handlers.checkpoint import AtomicCheckpointSaver, RNGState

EPOCHS = 6
ITERS_PER_EPOCH = 4  # 10 cases: 1 test, 1 validation, 4 labelled and 4 unlabelled, batch size 1


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory) -> Path:
    from medssl.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("resume_data")
    synthesize("lung_vessel", cases=10, size=32, seed=3, out=root)
    return root


def _overrides(data: Path, out: Path, **extra) -> dict:
    return {
        "bundle_root": str(out),
        "dataset_dir": str(data),
        "epochs": EPOCHS,
        "labeled_fraction": 0.5,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "batch_size": 1,
        "unlabeled_batch_size": 1,
        "method#warmup": 0,
        "method#ramp": 0,
        "seed": 7,
        **LUNG_TINY,
        "val_interval": 1000,  # no validation: the test is about the trainer's state
        **extra,
    }


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    start = time.monotonic()
    while not path.is_file():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"training ended (status {proc.returncode}) before {path} appeared:\n{err[-3000:]}")
        if time.monotonic() - start > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def _assert_same_state(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ"
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(resume_data, tmp_path):
    killed = tmp_path / "killed"
    ckpt = killed / "models" / "model_last.pt"
    proc = subprocess.Popen(
        bundle_command(LUNG, ["train.json"], _overrides(resume_data, killed)),
        cwd=BUNDLES / LUNG,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=bundle_env(),
    )
    _wait_for(ckpt, proc)
    time.sleep(0.1)  # into the next epoch
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # the checkpoint on disk is complete and from an epoch boundary before the end
    state = load_state_dict_file(ckpt)
    assert state["trainer"]["epoch_length"] == ITERS_PER_EPOCH
    epoch, rest = divmod(state["trainer"]["iteration"], ITERS_PER_EPOCH)  # ignite saves the iteration count
    assert rest == 0 and 1 <= epoch < EPOCHS
    assert {"model", "optimizer", "lr_scheduler", "threshold_head", "rng", "trainer"} <= set(state)

    # resume: continues from that epoch and finishes
    result = run_bundle(LUNG, ["train.json"], _overrides(resume_data, killed, resume=True))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Restored all variables from" in log
    epochs_logged = sorted({int(e) for e in re.findall(rf"Epoch: (\d+)/{EPOCHS}", log)})
    assert epochs_logged == list(range(epoch + 1, EPOCHS + 1)), epochs_logged
    resumed = load_state_dict_file(ckpt)
    assert resumed["trainer"]["iteration"] == EPOCHS * ITERS_PER_EPOCH

    # the same run without interruption ends with exactly the same weights, optimiser and generator states
    full = tmp_path / "full"
    result = run_bundle(LUNG, ["train.json"], _overrides(resume_data, full))
    assert result.returncode == 0, result.stderr[-3000:]
    uninterrupted = load_state_dict_file(full / "models" / "model_last.pt")
    for key in ("model", "threshold_head", "optimizer", "lr_scheduler", "rng"):
        _assert_same_state(uninterrupted[key], resumed[key], key)


def test_failure_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    net = torch.nn.Linear(3, 2)
    saver = AtomicCheckpointSaver(tmp_path, {"model": net, "rng": RNGState()}, engine_key=None)
    first = saver.save()
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)

    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # half of the file is on disk when the process "dies"
            fh.truncate(os.path.getsize(f) // 2)
        raise KeyboardInterrupt("killed during the checkpoint write")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        saver.save()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary file left
    state = load_state_dict_file(first)
    _assert_same_state(saved, state["model"], "model")


def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    """A real SIGKILL while ``torch.save`` writes the temporary file: the final name still holds the old checkpoint."""
    script = f"""
import os, signal, torch
from medssl.handlers.checkpoint import AtomicCheckpointSaver
net = torch.nn.Linear(3, 2)
torch.nn.init.constant_(net.weight, 1.0)
saver = AtomicCheckpointSaver({str(tmp_path)!r}, {{"model": net}}, engine_key=None)
saver.save()
torch.nn.init.constant_(net.weight, 2.0)
real = torch.save
def dying_save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 3)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
saver.save()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    state = load_state_dict_file(tmp_path / "model_last.pt")
    assert torch.equal(state["model"]["weight"], torch.ones(2, 3))


def test_pseudolabel_killed_mid_run_leaves_only_complete_files(lung_teacher, tmp_path):
    from _reliability import lung_phantom, write_nifti

    folder = tmp_path / "in"
    image, label = lung_phantom(shape=(32, 32, 32))
    data = {"training": [{"image": str(write_nifti(image, folder / "l.nii.gz")),
                          "label": str(write_nifti(label, folder / "l_seg.nii.gz"))}],
            "unlabeled": [{"image": str(write_nifti(lung_phantom(shape=(32, 32, 32), seed=i)[0], folder / f"u{i:02d}.nii.gz"))}
                          for i in range(40)]}  # fmt: skip
    (folder / "split.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medssl", "pseudolabel", "--bundle", str(BUNDLES / LUNG), "--checkpoint",
           str(lung_teacher), "--datalist", str(folder / "split.json"), "--out", str(out), "--device", "cpu",
           "--override", "roi_size=[16,16,16]"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", env=bundle_env()
    )
    _wait_for(out / "pseudo_labels" / "u00_pseudo.nii.gz", proc)
    assert proc.poll() is None, "pseudolabel finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()

    written = sorted((out / "pseudo_labels").glob("*.nii.gz"))  # what a student globbing the folder would read
    assert 1 <= len(written) < 40
    for path in written:
        seg = np.asanyarray(nib.load(path).dataobj)  # reads the whole file: fails on a truncated one
        assert seg.shape == (32, 32, 32)
    # the datalist a student trains from is written last: absent after a kill, so no case is half-listed
    assert not (out / "datalist.json").exists()


def test_resumed_best_saver_keeps_comparing_against_the_saved_best(tmp_path):
    """The best checkpoint's metric travels in the last checkpoint: a worse first evaluation after a resume does not
    replace the best model."""
    from types import SimpleNamespace

    net = torch.nn.Linear(2, 1)
    best = AtomicCheckpointSaver(tmp_path, {"model": net}, mode="best", key_metric_name="dice")
    engine = SimpleNamespace(state=SimpleNamespace(metrics={"dice": 0.8}))
    best._maybe_save_best(engine)
    state = best.state_dict()
    stamp = (tmp_path / "model_best.pt").stat().st_mtime_ns
    resumed = AtomicCheckpointSaver(tmp_path, {"model": net}, mode="best", key_metric_name="dice")
    resumed.load_state_dict(state)
    engine.state.metrics["dice"] = 0.5
    resumed._maybe_save_best(engine)
    assert (tmp_path / "model_best.pt").stat().st_mtime_ns == stamp and resumed.best == 0.8
    fresh = AtomicCheckpointSaver(tmp_path / "new", {"model": net}, mode="best", key_metric_name="dice")
    fresh.load_state_dict(fresh.state_dict())  # nothing saved yet: NaN round-trips to "no best"
    assert fresh.best is None
