"""Every method trains end to end on tiny synthetic lung-vessel data with medssl's public API and MONAI."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import Activations, AsDiscrete, Compose

from medssl.data.datalist import load_datalist
from medssl.data.split import split_datalist_file
from medssl.data.synthetic import synthesize
from medssl.engines import SemiSupervisedTrainer, SSLKeys
from medssl.workflows.evaluation import build_evaluator
from medssl.inference.predict import make_sliding_window_inferer, write_pseudolabels
from medssl.methods import build_method, strong_views, variant
from medssl.networks import ThresholdHead
from medssl.transforms.presets import lung_vessel_transforms

ROI = (16, 16, 16)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("lung")
    dataset = synthesize("lung_vessel", cases=6, size=32, seed=0, out=root / "data")
    return split_datalist_file(dataset, root / "split.json", labeled_fraction=0.5, test_fraction=0.2, seed=0)


def _net():
    torch.manual_seed(0)
    return UNet(3, 1, 1, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _loader(entries, stage, pseudo=False, strong=0):
    xform = lung_vessel_transforms(stage, roi_size=ROI, num_samples=1, pseudo_labels=pseudo, strong=strong)
    ds = Dataset(entries, transform=xform)
    return DataLoader(ds, batch_size=2, shuffle=False)


def _train(data, method, robust_loss="ce", threshold_fit="kl_only", epochs=2, init_mu=0.5, **overrides):
    net = _net()
    learned = method == "bpl" or overrides.get("cut") == "learned"
    head = ThresholdHead(3, in_channels=8) if learned else None
    # "model.1" is the last decoder stage before the output layer (8 channels at half resolution)
    settings = {"warmup": 0, "ramp": 0, "prior_mu": 0.5, "prior_std": 0.1, "threshold_fit": threshold_fit,
                "robust_loss": robust_loss}
    settings.update(overrides)
    ssl = build_method(method, settings, network=net, head=head, feature_layer="model.1", run_length=epochs)
    if head is not None:
        head.reset_prior(init_mu, 0.1)  # where the head starts (the method starts it at its prior)
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=_loader(data["training"], "train"),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=DiceCELoss(sigmoid=True),
        unlabeled_data_loader=_loader(data["unlabeled"], "unlabeled", ssl.reads_pseudo_labels, strong_views(method, settings))
        if ssl.uses_unlabeled
        else None,
        unsup_loss_function=ssl.unsup_loss,
        train_handlers=ssl.handlers,
    )
    losses, trainer.terms_seen = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[SSLKeys.LOSS])))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: e.terms_seen.append({k: float(v) for k, v in e.state.output[SSLKeys.LOSS_TERMS].items()}),
    )
    head_before = [p.detach().clone() for p in head.parameters()] if head is not None else None
    trainer.run()
    return trainer, net, head, head_before, losses


def _dice(net, data, tmp_path):
    evaluator = build_evaluator(
        DataLoader(Dataset(data["testing"], transform=lung_vessel_transforms("eval")), batch_size=1),
        net,
        roi_size=ROI,
        task="binary",
        device="cpu",
        output_dir=tmp_path,
    )
    evaluator.run()
    return evaluator.state.metrics["val_mean_dice"]


@pytest.mark.parametrize("method", ["supervised", "segpl"])
def test_method_trains_and_evaluates(split, tmp_path, method):
    data = load_datalist(split)
    trainer, net, _, _, losses = _train(data, method)
    assert losses and all(math.isfinite(v) for v in losses)
    terms = trainer.state.output[SSLKeys.LOSS_TERMS]
    if method == "segpl":
        assert float(terms["unsupervised"]) > 0
        assert 0 <= trainer.state.pseudo_label_stats["pl_foreground_fraction"] <= 1
    dice = _dice(net, data, tmp_path)
    assert 0.0 <= dice <= 1.0
    assert (tmp_path / "per_case.csv").is_file()


@pytest.mark.parametrize(
    "method, settings, term",
    [
        ("mean_teacher", {}, "consistency"),
        ("fixmatch", {}, "unsupervised"),
        ("fixmatch", {"cut": "learned"}, "unsupervised"),
        ("fixmatch", {"cut": "adaptive"}, "unsupervised"),
        ("fixmatch", {"source": "alternate", "alternate_period": 2}, "unsupervised"),  # AD-MT's teachers in turn
        ("unimatch", {}, "feature_perturbation"),
        ("bcp", {}, "copy_paste"),
        ("bcp", {"largest_component": True}, "copy_paste"),  # the loaders' MetaTensor batches through the LCC
        ("bcp", {"strong_view": True}, "copy_paste"),  # the loader's strong view pasted under the weak one's labels
        ("vat", {}, "vat"),
    ],
)
def test_newer_method_trains_through_its_own_term(split, method, settings, term):
    """On a bare engine each method's own loss term is there, finite and positive, and it trains the network: the
    run ends apart from the same run with the method's weight 0 (same loaders, same strong views, same draws)."""
    data = load_datalist(split)
    trainer, net, _, _, losses = _train(data, method, epochs=3, **settings)
    assert losses and all(math.isfinite(v) for v in losses)
    seen = [t[term] for t in trainer.terms_seen if term in t]
    assert seen and all(math.isfinite(v) for v in seen) and max(seen) > 0
    _, control_net, _, _, _ = _train(data, method, epochs=3, **settings, max_weight=0.0)
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), control_net.parameters()))


def test_paired_lower_bound_is_segpl_without_its_loss(split):
    """The paired control shares SegPL's random stream and never learns from pseudo-labels: it ends where SegPL ends
    when SegPL's warm-up lasts the whole run, and apart from SegPL whose loss is on."""
    data = load_datalist(split)
    method, settings = variant("paired_lower_bound")
    assert method == "segpl" and settings == {"max_weight": 0.0}
    control, control_net, _, _, losses = _train(data, method, **settings)
    terms = control.state.output[SSLKeys.LOSS_TERMS]
    assert float(terms["unsup_weight"]) == 0.0
    assert losses[-1] == pytest.approx(float(terms["supervised"]))
    warming, warming_net, _, _, _ = _train(data, "segpl", warmup=10)  # ten runs long: weight 0 throughout
    assert warming.state.iteration == control.state.iteration
    assert all(torch.equal(a, b) for a, b in zip(control_net.parameters(), warming_net.parameters()))
    _, segpl_net, _, _, _ = _train(data, "segpl")
    assert any(not torch.equal(a, b) for a, b in zip(control_net.parameters(), segpl_net.parameters()))


def test_bpl_kl_only_head_follows_the_kl(split):
    """kl_only: a head started above the prior mean is pulled back towards it by the KL alone."""
    data = load_datalist(split)
    trainer, _, head, before, losses = _train(data, "bpl", threshold_fit="kl_only", init_mu=0.7)
    assert all(math.isfinite(v) for v in losses)
    mu_bias_before, mu_bias_after = float(before[-1][0]), float(head.net[-1].bias[0])
    assert mu_bias_before == pytest.approx(0.7)
    assert 0.5 < mu_bias_after < 0.7
    stats = trainer.state.pseudo_label_stats
    assert 0 < stats["threshold_mean"] < 1 and stats["threshold_std"] >= 0
    assert float(trainer.state.output[SSLKeys.LOSS_TERMS]["kl"]) > 0


def test_bpl_elbo_head_learns_from_the_data_term(split):
    """elbo: a head started exactly at the prior (zero KL gradient) still moves: the soft cut trains it."""
    data = load_datalist(split)
    _, _, head, before, losses = _train(data, "bpl", threshold_fit="elbo", init_mu=0.5)
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(head.parameters(), before))


@pytest.mark.parametrize("robust_loss", ["ce", "gce", "bce", "sce"])
def test_teacher_student_with_each_robust_loss(split, tmp_path, robust_loss):
    data = load_datalist(split)
    _, teacher, _, _, _ = _train(data, "supervised", epochs=1)
    post = Compose([Activations(sigmoid=True), AsDiscrete(threshold=0.5)])
    inferer = make_sliding_window_inferer(ROI, torch.device("cpu"))
    pl_datalist = write_pseudolabels(teacher, split, tmp_path / "teacher", lung_vessel_transforms("infer"), inferer, post)
    student_data = load_datalist(pl_datalist)
    for entry in student_data["unlabeled"]:
        pl, img = nib.load(entry["pseudo_label"]), nib.load(entry["image"])
        assert pl.shape == img.shape
        np.testing.assert_allclose(pl.affine, img.affine, atol=1e-5)
    trainer, net, _, _, losses = _train(student_data, "teacher_student", robust_loss=robust_loss, epochs=1)
    assert all(math.isfinite(v) for v in losses)
    assert "unsupervised" in trainer.state.output[SSLKeys.LOSS_TERMS]


@pytest.mark.parametrize("method", ["segpl", "bpl"])
def test_pseudo_label_loss_is_dice_ce_or_cross_entropy_alone(method):
    """``unsup_loss ce`` leaves the Dice term out: the loss is the cross-entropy of the kept voxels."""
    net = _net()
    head = ThresholdHead(3, in_channels=8) if method == "bpl" else None
    torch.manual_seed(1)
    logits, target = torch.randn(2, 3, 4, 4, 4), torch.randint(0, 3, (2, 1, 4, 4, 4))
    mask = (torch.rand(2, 1, 4, 4, 4) > 0.3).float()
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0], reduction="none")[:, None]
    expected = (ce * mask).sum() / mask.sum()
    losses = {}
    for choice in ("dice_ce", "ce"):
        ssl = build_method(method, {"unsup_loss": choice}, network=net, head=head, feature_layer="model.1", run_length=4)
        losses[choice] = ssl.unsup_loss(logits, target, mask=mask)
    assert losses["ce"] == pytest.approx(expected.item(), rel=1e-5)
    assert losses["dice_ce"] > losses["ce"] + 0.1  # the Dice term of random logits is far from 0
    with pytest.raises(ValueError, match="unsup_loss"):
        build_method(method, {"unsup_loss": "dice"}, network=net, head=head, feature_layer="model.1", run_length=4)


@pytest.mark.parametrize("name", ["segpl", "fixmatch", "bcp"])
def test_dice_batch_pools_the_loss_on_pseudo_labels_like_the_supervised_loss(name):
    """``dice_batch`` (2D slice bundles): the loss on pseudo-labels (BCP: on mixed labels) is MONAI's DiceCELoss with
    the Dice pooled over the batch, the supervised loss of those bundles; without it, a Dice per image."""
    net = UNet(2, 1, 4, channels=(4, 8), strides=(2,))
    label = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    label[0, 0, 2:6, 2:6] = 3  # a class on the first slice only
    predicted = label.clone()
    predicted[1, 0, 0, 0] = 3  # and one stray voxel of it on the second
    logits = 20.0 * torch.nn.functional.one_hot(predicted[:, 0], 4).permute(0, 3, 1, 2).float()
    pooled = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, label)
    per_image = DiceCELoss(to_onehot_y=True, softmax=True)(logits, label)
    assert abs(float(pooled - per_image)) > 0.05  # the two differ enough to tell apart
    for dice_batch, expected in ((True, pooled), (False, per_image)):
        method = build_method(name, network=net, dice_batch=dice_batch)
        loss = next(h.loss for h in method.handlers if hasattr(h, "loss")) if name == "bcp" else method.unsup_loss
        assert float(loss(logits, label)) == pytest.approx(float(expected), abs=1e-5)
