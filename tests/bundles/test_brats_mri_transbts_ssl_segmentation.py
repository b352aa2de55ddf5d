"""The 3D BraTS TransBTS bundle, model-zoo style: tiny synthetic data, a tiny network, configs run as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl.checkpoints import load_state_dict_file, load_weights
from medssl.networks import TransBTS

BUNDLE = "brats_mri_transbts_ssl_segmentation"
# The default TransBTS (embed_dim 512, 4 layers, 128^3 windows) takes about 15 s per forward pass on a CPU: the
# tests shrink it through the bundle's top-level network ids, the way a user overrides any setting.
NET = {"network_channels": "[4,8,16,32]", "embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
NET_ARGS = {"channels": (4, 8, 16, 32), "embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
TINY = {
    "roi_size": "[32,32,32]",
    **NET,
    "num_workers": 0,
    "val_interval": 1,
    "cache_rate": 0.0,
    "method#warmup": 0,
    "method#ramp": 0,
}
BRATS_2018 = {0, 1, 2, 4}
REAL_CASE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brainlesion_brats_case_pseudolabel"


def _train_overrides(root, out, method, epochs=1, **extra):
    return {
        "bundle_root": str(out),
        "datalist": str(root / "data" / "dataset.json"),
        "epochs": epochs,
        "labeled_fraction": 0.5,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "ssl_method": method,
        **TINY,
        **extra,
    }


def _labels(path) -> set:
    return {int(v) for v in np.unique(np.asanyarray(nib.load(path).dataobj))}


@pytest.mark.parametrize("method", ["supervised", "segpl", "bpl"])
def test_train_each_method(brats_data, tmp_path, method, workflow):
    wf = workflow(BUNDLE, ["train.json"], _train_overrides(brats_data, tmp_path, method))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    terms = trainer.state.output["loss_terms"]
    assert all(torch.isfinite(v) for v in terms.values())
    assert (float(terms["unsupervised"]) > 0) == (method != "supervised")
    if method == "bpl":
        # the threshold head reads TransBTS's decoder features (channels[0] of the shrunk network)
        assert wf.parser.get_parsed_content("threshold_head").net[2].in_features == 4
        assert "threshold_mean" in trainer.state.pseudo_label_stats
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_mean_dice", "val_dice_WT", "val_dice_TC", "val_dice_ET", "val_hd95"} <= set(metrics)
    ckpt = load_state_dict_file(tmp_path / "models" / "model_last.pt")
    assert {"model", "optimizer", "threshold_head", "trainer", "rng"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]  # one epoch
    assert (tmp_path / "models" / "model_best.pt").is_file()
    wf.finalize()


def test_cli_train_resume_evaluate_infer_export(brats_data, tmp_path, run_bundle, bundles_dir):
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    out = tmp_path / "run"
    # train one epoch with the command users run, then resume to two
    run_bundle(BUNDLE, ["train.json"], _train_overrides(brats_data, out, "segpl", epochs=1))
    first = load_state_dict_file(out / "models" / "model_last.pt")
    result = run_bundle(BUNDLE, ["train.json"], _train_overrides(brats_data, out, "segpl", epochs=2, resume=True))
    assert "Restored all variables from" in result.stdout + result.stderr
    second = load_state_dict_file(out / "models" / "model_last.pt")
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]

    # evaluate on the test cases: WT / TC / ET Dice and HD95 per case
    evaluate = {**_train_overrides(brats_data, out, "segpl"), "output_dir": str(out / "eval")}
    run_bundle(BUNDLE, ["train.json", "evaluate.json"], evaluate)
    table = pd.read_csv(out / "eval" / "per_case.csv")
    assert len(table) == 2
    for region in ("WT", "TC", "ET"):
        assert table[f"val_mean_dice_{region}"].between(0, 1).all()
        assert (table[f"val_hd95_{region}"].dropna() >= 0).all()
    assert (out / "eval" / "summary.csv").is_file()

    # inference on the datalist's 'testing' cases: 2018 labels on each input's grid
    data = brats_data / "data"
    entries = json.loads((data / "dataset.json").read_text())["training"]
    abs_entries = [{**e, "image": [str(data / f) for f in e["image"]], "label": str(data / e["label"])}
                   for e in entries]
    infer_dir = tmp_path / "infer"
    infer_dir.mkdir()
    (infer_dir / "datalist.json").write_text(json.dumps({"training": abs_entries[:4], "testing": abs_entries[4:]}))
    infer = {"bundle_root": str(out), "dataset_dir": str(infer_dir), "output_dir": str(out / "pred")}
    run_bundle(BUNDLE, ["inference.json"], {**infer, "roi_size": "[32,32,32]", **NET})
    assert sorted(p.name for p in (out / "pred").iterdir()) == [f"{e['case_id']}_seg.nii.gz" for e in entries[4:]]
    for e in abs_entries[4:]:
        seg = nib.load(out / "pred" / f"{e['case_id']}_seg.nii.gz")
        img = nib.load(e["image"][0])
        assert seg.shape == img.shape
        np.testing.assert_allclose(seg.affine, img.affine, atol=1e-5)
        assert _labels(out / "pred" / f"{e['case_id']}_seg.nii.gz") <= BRATS_2018

    # TorchScript export (what `python -m monai.bundle ckpt_export` runs), equal to the eager network
    cwd = bundles_dir / BUNDLE
    net_overrides = {"roi_size": [32, 32, 32], **{k: json.loads(str(v)) for k, v in NET.items()}}
    ckpt_export(
        "network_def",
        filepath=str(out / "models" / "model.ts"),
        ckpt_file=str(out / "models" / "model_best.pt"),
        key_in_ckpt="model",
        meta_file=str(cwd / "configs" / "metadata.json"),
        config_file=str(cwd / "configs" / "inference.json"),
        bundle_root=str(out),
        **net_overrides,
    )
    ts = torch.jit.load(str(out / "models" / "model.ts"))
    eager = TransBTS(3, 4, 4, img_size=32, **NET_ARGS)
    load_weights(eager, out / "models" / "model_best.pt")
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager.eval()(x), atol=1e-4, rtol=1e-4)

    # metadata against the schema; the network's input and output against the metadata (shrunk, with its ROI)
    verify_metadata(meta_file=str(cwd / "configs" / "metadata.json"), filepath=str(bundles_dir / "meta_schema.json"))
    verify_net_in_out(
        "network_def",
        meta_file=str(cwd / "configs" / "metadata.json"),
        config_file=str(cwd / "configs" / "inference.json"),
        device="cpu",
        **{"_meta_#network_data_format#inputs#image#spatial_shape": [32, 32, 32]},
        **net_overrides,
    )


@pytest.mark.slow
def test_default_network_verify(bundles_dir):
    """``verify_net_in_out`` as the README runs it: the full-size TransBTS on one 128^3 window (about 15 s on a CPU)."""
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def"]
    cmd += ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    result = subprocess.run(cmd, cwd=bundles_dir / BUNDLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified with no error" in result.stdout + result.stderr


@pytest.mark.skipif(not REAL_CASE.is_dir(), reason=f"real BraTS case not found at {REAL_CASE} (shared data)")
def test_inference_on_real_brats_case(tmp_path, run_bundle):
    """inference.json on a real 240x240x155 case (BraTS 2023 file names), random tiny network, 64^3 windows."""
    # BraTS 2023 t1n, t1c, t2w, t2f are the t1, t1ce, t2, flair the bundle reads, in that order
    images = [str(REAL_CASE / f"{m}.nii.gz") for m in ("t1n", "t1c", "t2w", "t2f")]
    (tmp_path / "datalist.json").write_text(json.dumps({"unlabeled": [{"image": images, "case_id": "real"}]}))
    torch.manual_seed(0)
    net = TransBTS(3, 4, 4, img_size=64, **NET_ARGS)
    torch.save({"model": net.state_dict()}, tmp_path / "tiny.pt")
    run_bundle(
        BUNDLE,
        ["inference.json"],
        {
            "bundle_root": str(tmp_path),
            "dataset_dir": str(tmp_path),
            "checkpoint": str(tmp_path / "tiny.pt"),
            "output_dir": str(tmp_path / "pred"),
            "roi_size": "[64,64,64]",
            "sw_batch_size": 4,
            **NET,
        },
    )
    seg = nib.load(tmp_path / "pred" / "real_seg.nii.gz")
    ref = nib.load(images[0])
    assert seg.shape == (240, 240, 155) == ref.shape
    np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-5)
    assert _labels(tmp_path / "pred" / "real_seg.nii.gz") <= BRATS_2018


def test_teacher_student_with_medssl_pseudolabel(brats_data, tmp_path, workflow, bundles_dir):
    from medssl.cli import main
    from medssl.data.datalist import load_datalist

    split = tmp_path / "split.json"
    fractions = ["--labeled-fraction", "0.5", "--val-fraction", "0.25", "--test-fraction", "0.25"]
    dataset = str(brats_data / "data" / "dataset.json")
    assert main(["split", "--datalist", dataset, *fractions, "--out", str(split)]) == 0
    teacher_dir = tmp_path / "teacher"
    common = {"datalist": str(split), "labeled_fraction": 0.5, **TINY, "epochs": 1}
    wf = workflow(BUNDLE, ["train.json"], {"bundle_root": str(teacher_dir), "ssl_method": "supervised", **common})
    wf.run()
    wf.finalize()
    pl_dir = tmp_path / "pl"
    overrides = [arg for k, v in {"roi_size": "[32,32,32]", **NET}.items() for arg in ("--override", f"{k}={v}")]
    teacher = str(teacher_dir / "models" / "model_best.pt")
    argv = ["pseudolabel", "--bundle", str(bundles_dir / BUNDLE), "--checkpoint", teacher, "--datalist", str(split)]
    argv += ["--out", str(pl_dir), "--device", "cpu", *overrides]
    assert main(argv) == 0
    pl = load_datalist(pl_dir / "datalist.json")
    assert pl["unlabeled"] and all(e["pseudo_labeled"] for e in pl["unlabeled"])
    for e in pl["unlabeled"]:
        assert nib.load(e["pseudo_label"]).shape == nib.load(e["image"][0]).shape
        assert _labels(e["pseudo_label"]) <= BRATS_2018  # written in the labels' convention, read back as such
    student = {"bundle_root": str(tmp_path / "student"), "datalist": str(pl_dir / "datalist.json")}
    wf = workflow(BUNDLE, ["train.json"], {**common, **student, "ssl_method": "teacher_student", "method#robust_loss": "gce"})
    wf.run()
    terms = wf.parser.get_parsed_content("train#trainer").state.output["loss_terms"]
    assert torch.isfinite(terms["unsupervised"]) and float(terms["unsupervised"]) > 0
    wf.finalize()
