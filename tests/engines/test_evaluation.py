from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import DataLoader, MetaTensor

from medssl.workflows.evaluation import build_evaluator


def _dice(p, g):
    p, g = np.asarray(p, bool), np.asarray(g, bool)
    return 2 * (p & g).sum() / (p.sum() + g.sum())


def _case(image, label, name):
    meta = {"filename_or_obj": f"/data/{name}.nii.gz"}
    return {"image": MetaTensor(torch.as_tensor(image, dtype=torch.float32), meta=meta), "label": torch.as_tensor(label)}


def test_binary_dice_matches_known_overlap(tmp_path):
    g = np.zeros((1, 16, 16), np.float32)
    g[0, 2:10, 2:10] = 1  # 64 voxels
    p = np.zeros((1, 16, 16), np.float32)
    p[0, 6:14, 2:10] = 1  # 64 voxels, 32 shared -> Dice 0.5
    p2 = g.copy()  # a perfect case
    cases = [_case(np.where(p > 0, 10.0, -10.0), g, "a"), _case(np.where(p2 > 0, 10.0, -10.0), g, "b")]
    evaluator = build_evaluator(
        DataLoader(cases, batch_size=1), torch.nn.Identity(), roi_size=(16, 16), task="binary", device="cpu", output_dir=tmp_path
    )
    evaluator.run()
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx((0.5 + 1.0) / 2)
    table = pd.read_csv(tmp_path / "per_case.csv")
    assert table["case"].tolist() == ["a", "b"]
    assert table["val_mean_dice_foreground"].tolist() == pytest.approx([0.5, 1.0])
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert summary.loc["val_mean_dice_foreground", "mean"] == pytest.approx(0.75)


@pytest.mark.parametrize("largest_component, dice", [(False, 2 * 64 / (64 + 80)), (True, 1.0)])
def test_largest_component_drops_a_stray_blob_before_scoring(largest_component, dice):
    """The LA bundle's ``largest_component``: a 16-voxel false blob apart from the 64-voxel true one is dropped
    (it failed on the CPU before: MONAI's connected components need scikit-image, now a dependency)."""
    g = np.zeros((1, 16, 16), np.float32)
    g[0, 2:10, 2:10] = 1
    p = g.copy()
    p[0, 12:16, 12:16] = 1
    evaluator = build_evaluator(
        DataLoader([_case(np.where(p > 0, 10.0, -10.0), g, "a")], batch_size=1), torch.nn.Identity(),
        roi_size=(16, 16), task="binary", device="cpu", largest_component=largest_component,
    )  # fmt: skip
    evaluator.run()
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(dice)


def test_brats_region_dice_and_hd95(tmp_path):
    gt = np.zeros((16, 16), np.int64)
    gt[2:12, 2:12] = 2  # edema
    gt[4:10, 4:10] = 1  # core
    gt[6:8, 6:8] = 3  # enhancing
    pred = gt.copy()
    pred[4:10, 4:6] = 2  # a third of the core is called edema
    logits = np.eye(4, dtype=np.float32)[pred].transpose(2, 0, 1) * 10
    evaluator = build_evaluator(
        DataLoader([_case(logits, gt[None], "c")], batch_size=1),
        torch.nn.Identity(),
        roi_size=(16, 16),
        task="brats",
        device="cpu",
        output_dir=tmp_path,
        checkpoint_dir=tmp_path / "ckpt",
    )
    evaluator.run()
    m = evaluator.state.metrics
    wt = lambda x: x > 0  # noqa: E731
    tc = lambda x: (x == 1) | (x == 3)  # noqa: E731
    et = lambda x: x == 3  # noqa: E731
    assert m["val_dice_WT"] == pytest.approx(_dice(wt(pred), wt(gt)))
    assert m["val_dice_TC"] == pytest.approx(_dice(tc(pred), tc(gt)))
    assert m["val_dice_ET"] == pytest.approx(1.0)
    assert m["val_mean_dice"] == pytest.approx((1.0 + _dice(tc(pred), tc(gt)) + 1.0) / 3)
    assert m["val_hd95"] >= 0
    table = pd.read_csv(tmp_path / "per_case.csv")
    # each figure under one name (there were val_dice_WT_0 ... beside val_mean_dice_WT ...), with the case's mean
    regions = [f"{m}_{r}" for m in ("val_hd95", "val_mean_dice") for r in ("WT", "TC", "ET")]
    assert list(table.columns) == ["case", *regions[:3], "val_hd95", *regions[3:], "val_mean_dice"]
    assert table.loc[0, "val_mean_dice"] == pytest.approx(m["val_mean_dice"])
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert summary.loc["val_mean_dice", "mean"] == pytest.approx(m["val_mean_dice"])
    assert (tmp_path / "ckpt" / "model_best.pt").is_file()


def test_unknown_task():
    with pytest.raises(ValueError, match="task"):
        build_evaluator([], torch.nn.Identity(), (8, 8), task="liver", device="cpu")
