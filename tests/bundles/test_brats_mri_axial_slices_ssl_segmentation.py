"""The 2D BraTS axial-slice bundle, model-zoo style: slices of tiny synthetic cases from ``medssl prepare brats
--slices2d``, a tiny network, the configs run as users run them."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl.checkpoints import load_state_dict_file, load_weights
from medssl.networks import TransBTS

BUNDLE = "brats_mri_axial_slices_ssl_segmentation"
NET = {"network_channels": "[4,8,16,32]", "embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
NET_ARGS = {"channels": (4, 8, 16, 32), "embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
TINY = {
    "roi_size": "[32,32]",
    **NET,
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_workers": 0,
    "val_interval": 1,
    "cache_rate": 0.0,
    "method#warmup": 0,
    "method#ramp": 0,
}
BRATS_2018 = {0, 1, 2, 4}


def _train_overrides(root, out, method, epochs=1, **extra):
    return {
        "bundle_root": str(out),
        "dataset_dir": str(root / "slices"),
        "epochs": epochs,
        "labeled_fraction": 0.5,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "ssl_method": method,
        **TINY,
        **extra,
    }


@pytest.mark.parametrize("method", ["supervised", "segpl", "bpl"])
def test_train_each_method(brats2d_data, tmp_path, method, workflow):
    wf = workflow(BUNDLE, ["train.json"], _train_overrides(brats2d_data, tmp_path, method))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    # the split keeps the slices of a case together: 1 labelled case of 4 slices in batches of 2
    assert trainer.state.epoch_length == 2
    terms = trainer.state.output["loss_terms"]
    assert all(torch.isfinite(v) for v in terms.values())
    assert (float(terms["unsupervised"]) > 0) == (method != "supervised")
    if method == "bpl":
        head = wf.parser.get_parsed_content("threshold_head")
        assert head.spatial_dims == 2 and head.net[2].in_features == 4  # TransBTS decoder features, full resolution
        assert "threshold_mean" in trainer.state.pseudo_label_stats
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_mean_dice", "val_dice_WT", "val_dice_TC", "val_dice_ET", "val_hd95"} <= set(metrics)
    ckpt = load_state_dict_file(tmp_path / "models" / "model_last.pt")
    assert {"model", "optimizer", "threshold_head", "trainer", "rng"} <= set(ckpt)
    assert (tmp_path / "models" / "model_best.pt").is_file()
    wf.finalize()


def test_cli_train_resume_evaluate_infer_export(brats2d_data, tmp_path, run_bundle, bundles_dir):
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    out = tmp_path / "run"
    run_bundle(BUNDLE, ["train.json"], _train_overrides(brats2d_data, out, "bpl", epochs=1))
    first = load_state_dict_file(out / "models" / "model_last.pt")
    result = run_bundle(BUNDLE, ["train.json"], _train_overrides(brats2d_data, out, "bpl", epochs=2, resume=True))
    assert "Restored all variables from" in result.stdout + result.stderr
    second = load_state_dict_file(out / "models" / "model_last.pt")
    assert second["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]

    # evaluation is per scan, as BraTS scores it: one row per test case, its slices stacked back into a volume
    evaluate = {**_train_overrides(brats2d_data, out, "bpl"), "output_dir": str(out / "eval")}
    run_bundle(BUNDLE, ["train.json", "evaluate.json"], evaluate)
    table = pd.read_csv(out / "eval" / "per_case.csv")
    assert len(table) == 2 and table["case"].is_unique
    assert all(case.startswith("brats_") and "_z" not in case for case in table["case"])
    for region in ("WT", "TC", "ET"):
        assert table[f"val_mean_dice_{region}"].dropna().between(0, 1).all()
        assert f"val_hd95_{region}" in table

    # inference on the slice datalist's 'testing' slices: one 2D segmentation per slice, named <case>_z<slice>
    datalist = json.loads((brats2d_data / "slices" / "datalist.json").read_text())
    entries = datalist["training"]
    infer_dir = tmp_path / "infer"
    infer_dir.mkdir()
    (infer_dir / "datalist.json").write_text(json.dumps({"training": entries[:-3], "testing": entries[-3:]}))
    infer = {"bundle_root": str(out), "dataset_dir": str(infer_dir), "output_dir": str(out / "pred")}
    run_bundle(BUNDLE, ["inference.json"], {**infer, "roi_size": "[32,32]", **NET})
    expected = [f"{e['case_id']}_z{e['slice']:03d}_seg.nii.gz" for e in entries[-3:]]
    assert sorted(p.name for p in (out / "pred").iterdir()) == sorted(expected)
    for e, name in zip(entries[-3:], expected):
        seg = nib.load(out / "pred" / name)
        ref = nib.load(e["label"])
        assert seg.shape == ref.shape == nib.load(e["image"]).shape[:2]
        np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-5)
        assert {int(v) for v in np.unique(np.asanyarray(seg.dataobj))} <= BRATS_2018

    # TorchScript export, equal to the eager network
    cwd = bundles_dir / BUNDLE
    net_overrides = {"roi_size": [32, 32], **{k: json.loads(str(v)) for k, v in NET.items()}}
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
    eager = TransBTS(2, 4, 4, img_size=32, **NET_ARGS)
    load_weights(eager, out / "models" / "model_best.pt")
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager.eval()(x), atol=1e-4, rtol=1e-4)

    # metadata against the schema; the default network (a 128x128 window is cheap in 2D) against the metadata
    verify_metadata(meta_file=str(cwd / "configs" / "metadata.json"), filepath=str(bundles_dir / "meta_schema.json"))
    configs = cwd / "configs"
    meta, inference = str(configs / "metadata.json"), str(configs / "inference.json")
    verify_net_in_out("network_def", meta_file=meta, config_file=inference, device="cpu")


def test_supervised_dice_is_pooled_over_the_slices_of_a_batch(bundles_dir):
    """A class absent from a slice must not cost a whole Dice term for one stray voxel there: per-slice Dice made the
    models of the real BraTS track stop predicting tumour core and enhancing tumour (both 0.0 on test)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundles_dir / BUNDLE / "configs" / c) for c in ("common.json", "train.json")])
    loss = parser.get_parsed_content("loss")
    label = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    label[0, 0, 2:6, 2:6] = 3  # enhancing tumour, 16 voxels on the first slice; the second slice has none
    predicted = label.clone()
    predicted[1, 0, 0, 0] = 3  # one stray voxel on the tumour-free slice
    logits = 20.0 * torch.nn.functional.one_hot(predicted[:, 0], 4).permute(0, 3, 1, 2).float()
    ce = torch.nn.functional.cross_entropy(logits, label[:, 0])
    # soft Dice per class with MONAI's smoothing (1e-5), the sums taken over both slices at once
    prob, onehot = logits.softmax(1), torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    dice = (2 * (prob * onehot).sum(dims) + 1e-5) / (prob.sum(dims) + onehot.sum(dims) + 1e-5)
    assert dice[3] == pytest.approx(32 / 33, abs=1e-4)  # 16 voxels found, 1 stray: nearly perfect
    assert float(loss(logits, label)) == pytest.approx(float(ce + (1 - dice).mean()), abs=1e-5)
    # per slice, the stray voxel would cost the second slice its whole enhancing-tumour term: above 0.1 more
    assert float(loss(logits, label)) < float(ce) + 0.05
    # the methods' losses on pseudo-labels and mixed labels pool theirs the same way
    assert "dice_batch=@dice_batch" in parser.get("ssl") and parser.get("loss")["batch"] == "@dice_batch"
    assert parser.get_parsed_content("dice_batch") is True
