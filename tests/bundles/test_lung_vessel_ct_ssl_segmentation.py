"""The lung-vessel CT bundle, model-zoo style: tiny synthetic data, the configs run as users run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl.checkpoints import load_state_dict_file

BUNDLE = "lung_vessel_ct_ssl_segmentation"
TINY = {"roi_size": "[16,16,16]", "num_workers": 0, "val_interval": 1, "cache_rate": 0.0, "method#warmup": 0, "method#ramp": 0}


def _train_overrides(root, out, method, epochs=1, **extra):
    return {
        "bundle_root": str(out),
        "dataset_dir": str(root / "data"),
        "epochs": epochs,
        "labeled_fraction": 0.5,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "ssl_method": method,
        **TINY,
        **extra,
    }


@pytest.mark.parametrize("method", ["supervised", "segpl", "bpl"])
def test_train_each_method(lung_data, tmp_path, method, workflow):
    wf = workflow(BUNDLE, ["train.json"], _train_overrides(lung_data, tmp_path, method))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    terms = trainer.state.output["loss_terms"]
    assert all(torch.isfinite(v) for v in terms.values())
    assert (float(terms["unsupervised"]) > 0) == (method != "supervised")
    if method == "bpl":
        assert "threshold_mean" in trainer.state.pseudo_label_stats
    ckpt = load_state_dict_file(tmp_path / "models" / "model_last.pt")
    assert {"model", "optimizer", "threshold_head", "trainer", "rng"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]  # one epoch
    assert (tmp_path / "models" / "model_best.pt").is_file()
    wf.finalize()


def test_cli_train_evaluate_infer_resume_export(lung_data, tmp_path, run_bundle, bundles_dir):
    out = tmp_path / "run"
    # train one epoch with the command users run, then resume to two
    run_bundle(BUNDLE, ["train.json"], _train_overrides(lung_data, out, "segpl", epochs=1))
    first = load_state_dict_file(out / "models" / "model_last.pt")
    result = run_bundle(BUNDLE, ["train.json"], _train_overrides(lung_data, out, "segpl", epochs=2, resume=True))
    assert "Restored all variables from" in result.stdout + result.stderr
    second = load_state_dict_file(out / "models" / "model_last.pt")
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]

    # evaluate on the test cases: per-case CSV and summary
    run_bundle(BUNDLE, ["train.json", "evaluate.json"], {**_train_overrides(lung_data, out, "segpl"), "output_dir": str(out / "eval")})
    table = pd.read_csv(out / "eval" / "per_case.csv")
    assert len(table) == 2 and table["val_mean_dice_foreground"].between(0, 1).all()
    assert (out / "eval" / "summary.csv").is_file()

    # inference writes segmentations on the input grid
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    src = sorted((lung_data / "data" / "imagesTr").glob("*.nii.gz"))[:2]
    for f in src:
        shutil.copy(f, inputs / f.name)
    run_bundle(
        BUNDLE,
        ["inference.json"],
        {"bundle_root": str(out), "dataset_dir": str(inputs), "output_dir": str(out / "pred"), "roi_size": "[16,16,16]"},
    )
    for f in src:
        seg = nib.load(out / "pred" / f.name.replace(".nii.gz", "_seg.nii.gz"))
        img = nib.load(f)
        assert seg.shape == img.shape
        np.testing.assert_allclose(seg.affine, img.affine, atol=1e-5)
        assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}

    # TorchScript export, loadable and equal to the eager network
    bundle_dir = out  # export into the run folder, not the source tree
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(bundle_dir / "models" / "model.ts"),
        "--ckpt_file", str(out / "models" / "model_best.pt"),
        "--key_in_ckpt", "model",
        "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json",
        "--bundle_root", str(out),
    ]
    subprocess.run(cmd, cwd=bundles_dir / BUNDLE, check=True, capture_output=True)
    ts = torch.jit.load(str(bundle_dir / "models" / "model.ts"))
    assert tuple(ts(torch.zeros(1, 1, 32, 32, 32)).shape) == (1, 1, 32, 32, 32)


def test_metadata_and_network_verify(verify_bundle):
    verify_bundle(BUNDLE)


def test_teacher_student_with_medssl_pseudolabel(lung_data, tmp_path, workflow, bundles_dir):
    from medssl.cli import main
    from medssl.data.datalist import load_datalist

    split = tmp_path / "split.json"
    assert main(["split", "--datalist", str(lung_data / "data" / "dataset.json"), "--labeled-fraction", "0.5", "--val-fraction", "0.25", "--test-fraction", "0.25", "--out", str(split)]) == 0
    teacher_dir = tmp_path / "teacher"
    common = {"datalist": str(split), "labeled_fraction": 0.5, **TINY, "epochs": 1}
    wf = workflow(BUNDLE, ["train.json"], {"bundle_root": str(teacher_dir), "ssl_method": "supervised", **common})
    wf.run()
    wf.finalize()
    pl_dir = tmp_path / "pl"
    assert main(["pseudolabel", "--bundle", str(bundles_dir / BUNDLE), "--checkpoint", str(teacher_dir / "models" / "model_best.pt"), "--datalist", str(split), "--out", str(pl_dir), "--device", "cpu"]) == 0
    pl = load_datalist(pl_dir / "datalist.json")
    assert pl["unlabeled"] and all(e["pseudo_labeled"] for e in pl["unlabeled"])
    for e in pl["unlabeled"]:
        assert nib.load(e["pseudo_label"]).shape == nib.load(e["image"]).shape
    for loss in ("gce", "sce"):
        wf = workflow(BUNDLE, ["train.json"], {**common, "bundle_root": str(tmp_path / loss), "datalist": str(pl_dir / "datalist.json"), "ssl_method": "teacher_student", "method#robust_loss": loss})
        wf.run()
        terms = wf.parser.get_parsed_content("train#trainer").state.output["loss_terms"]
        assert float(terms["unsupervised"]) > 0
        wf.finalize()
