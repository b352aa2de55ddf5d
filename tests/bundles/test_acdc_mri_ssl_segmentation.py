"""The 2D ACDC bundle, model-zoo style: a tiny folder in the SSL4MIS layout, ``medssl prepare ssl4mis``, a tiny UNet,
the configs run as users run them."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medssl.cli import main
from medssl.checkpoints import load_state_dict_file

BUNDLE = "acdc_mri_ssl_segmentation"
TINY = {
    "roi_size": "[32,32]",
    "network_channels": "[4,8,16,32,64]",
    "num_res_units": 0,
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_workers": 0,
    "iterations": 4,
    "val_interval": 2,
    "optimizer_name": "adamw",
    "learning_rate": 0.001,
    "method#warmup": 0,
    "method#ramp": 0,
}


# an untrained 4-class network is never confident: a low prior lets the Bayesian cut keep voxels after 4 iterations
@pytest.mark.parametrize("method, extra", [("supervised", {}), ("segpl", {}), ("bpl", {"method#prior_mu": 0.05})])
def test_train_each_method(acdc_data, tmp_path, method, extra, workflow):
    overrides = {"bundle_root": str(tmp_path), "dataset_dir": str(acdc_data), "ssl_method": method, **TINY, **extra}
    wf = workflow(BUNDLE, ["train.json"], overrides)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 4 and trainer.state.epoch == 2  # the budget is in iterations
    terms = trainer.state.output["loss_terms"]
    assert all(torch.isfinite(v) for v in terms.values())
    assert (float(terms["unsupervised"]) > 0) == (method != "supervised")
    # poly decay over exactly the run: the learning rate ends at zero
    assert wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    curve = pd.read_csv(tmp_path / "eval" / "val_curve.csv")
    assert curve["iteration"].tolist() == [2, 4] and curve["val_mean_dice"].between(0, 1).all()
    assert {"val_dice_RV", "val_dice_Myo", "val_dice_LV"} <= set(curve.columns)
    last = load_state_dict_file(tmp_path / "models" / "model_last.pt")
    assert float(last["best"]["best"]) == pytest.approx(curve["val_mean_dice"].max())
    wf.finalize()


# every registered method that reads unlabelled images, through the bundle as configured (strong views, EMA teacher,
# copy-paste halves): 4 iterations, the unsupervised loss on from the first
@pytest.mark.parametrize(
    "method, extra",
    [("segpl", {"method#source": "teacher", "method#threshold": 0.05}), ("bpl", {"method#threshold_fit": "kl_only", "method#prior_mu": 0.05}),
     ("mean_teacher", {}), ("fixmatch", {"method#threshold": 0.05}),
     ("fixmatch", {"method#cut": "learned", "method#prior_mu": 0.05}),
     ("fixmatch", {"method#cut": "adaptive"}),
     ("unimatch", {"method#threshold": 0.05}), ("bcp", {}), ("bcp", {"method#strong_view": True}), ("vat", {})],
)  # fmt: skip
def test_every_method_trains_through_the_bundle(acdc_data, tmp_path, method, extra, workflow):
    overrides = {"bundle_root": str(tmp_path), "dataset_dir": str(acdc_data), "ssl_method": method, **TINY, **extra}
    wf = workflow(BUNDLE, ["train.json"], overrides)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    terms = trainer.state.output["loss_terms"]
    assert trainer.state.iteration == 4 and all(torch.isfinite(v) for v in terms.values())
    own = {"mean_teacher": "consistency", "bcp": "copy_paste", "vat": "vat"}.get(method, "unsupervised")
    assert float(terms[own]) > 0, terms
    if method == "unimatch":
        assert {"strong2", "feature_perturbation"} <= set(terms)
    last = load_state_dict_file(tmp_path / "models" / "model_last.pt")
    if method in ("mean_teacher", "bcp") or extra.get("method#source") == "teacher":
        assert any("teacher" in str(v) or isinstance(v, dict) for v in last["method"].values())  # the EMA teacher
    if extra.get("method#cut") == "adaptive":  # FreeMatch's moving averages, moved off 1/C
        state = last["method"]["adaptive_threshold"]
        assert state["class_means"].shape == (4,) and not torch.allclose(state["class_means"], torch.tensor(0.25).double())
    wf.finalize()


def test_cli_train_evaluate_infer_and_verify(acdc_data, tmp_path, run_bundle, bundles_dir):
    out = tmp_path / "run"
    common = {"bundle_root": str(out), "dataset_dir": str(acdc_data), "ssl_method": "supervised", **TINY}
    result = run_bundle(BUNDLE, ["train.json"], common)
    # a log to a file or pipe: no progress-bar redraws, and a short run logs its loss every iteration (it logged
    # every 50th, none in a short run)
    log = result.stdout + result.stderr
    assert "\r" not in log
    assert [line.split(" - INFO - ")[1].split(" --")[0] for line in log.splitlines() if " -- loss: " in line] == [
        "Epoch: 1/2, Iter: 1/2", "Epoch: 1/2, Iter: 2/2", "Epoch: 2/2, Iter: 1/2", "Epoch: 2/2, Iter: 2/2"]  # fmt: skip
    assert "unsup_weight" not in log
    # evaluation scores each test volume once: Dice and HD95 of RV, Myo and LV
    run_bundle(BUNDLE, ["train.json", "evaluate.json"], {**common, "output_dir": str(out / "eval_test")})
    table = pd.read_csv(out / "eval_test" / "per_case.csv")
    assert sorted(table["case"]) == ["patient102_frame01", "patient103_frame01"]
    for name in ("RV", "Myo", "LV"):
        assert table[f"val_mean_dice_{name}"].between(0, 1).all() and f"val_hd95_{name}" in table
    # inference on a volume and on a slice: a label map on the input's own grid and affine
    volume = acdc_data / "images" / "patient102_frame01.nii.gz"
    infer_in = tmp_path / "in"
    infer_in.mkdir()
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    nib.save(nib.Nifti1Image(np.asanyarray(nib.load(volume).dataobj), affine), infer_in / "vol.nii.gz")
    slice_img = acdc_data / "images" / "patient001_frame01_slice_1.nii.gz"
    nib.save(nib.load(slice_img), infer_in / "slice.nii.gz")
    run_bundle(BUNDLE, ["inference.json"], {"bundle_root": str(out), "dataset_dir": str(infer_in), "output_dir": str(out / "pred"),
                                             "roi_size": "[32,32]", "network_channels": "[4,8,16,32,64]", "num_res_units": 0})  # fmt: skip
    pred = nib.load(out / "pred" / "vol_seg.nii.gz")
    assert pred.shape == (40, 32, 3) and np.allclose(pred.affine, affine)
    assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1, 2, 3}
    assert nib.load(out / "pred" / "slice_seg.nii.gz").shape == (32, 36)


def test_teacher_student_with_medssl_pseudolabel(acdc_data, tmp_path, workflow, bundles_dir):
    from medssl.data.datalist import load_datalist

    teacher = tmp_path / "teacher"
    common = {"dataset_dir": str(acdc_data), **TINY}
    wf = workflow(BUNDLE, ["train.json"], {"bundle_root": str(teacher), "ssl_method": "supervised", **common})
    wf.run()
    wf.finalize()
    pl = tmp_path / "pl"
    args = ["pseudolabel", "--bundle", str(bundles_dir / BUNDLE), "--datalist", str(acdc_data / "datalist_3.json"),
            "--checkpoint", str(teacher / "models" / "model_best.pt"), "--out", str(pl), "--device", "cpu",
            "--override", "roi_size=[32,32]", "--override", "network_channels=[4,8,16,32,64]", "--override", "num_res_units=0"]  # fmt: skip
    assert main(args) == 0
    data = load_datalist(pl / "datalist.json")
    assert len(data["unlabeled"]) == 20
    for e in data["unlabeled"]:
        assert nib.load(e["pseudo_label"]).shape == nib.load(e["image"]).shape == (32, 36)
    wf = workflow(BUNDLE, ["train.json"], {**common, "bundle_root": str(tmp_path / "s"), "datalist": str(pl / "datalist.json"),
                                           "ssl_method": "teacher_student", "method#robust_loss": "gce"})  # fmt: skip
    wf.run()
    assert float(wf.parser.get_parsed_content("train#trainer").state.output["loss_terms"]["unsupervised"]) > 0
    wf.finalize()


def test_metadata_and_network_verify(verify_bundle):
    verify_bundle(BUNDLE)