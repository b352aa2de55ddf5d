from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.networks.nets import UNet

from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers import (
    BayesianPseudoLabelHandler,
    OfflinePseudoLabelHandler,
    PseudoLabelStatsHandler,
    SegPLHandler,
    UnsupervisedWeightSchedule,
    ssl_scalars,
)
from medssl.networks import ThresholdHead
from medssl.transforms.thresholding import hard_pseudo_labels, soft_pseudo_labels


def _engine(output=None, **state):
    engine = Engine(lambda e, b: e.state.output)
    engine.register_events(*IterationEvents)
    engine.register_events(*SSLEvents)
    engine.state.output = {} if output is None else output
    engine.state.device = torch.device("cpu")
    for k, v in state.items():
        setattr(engine.state, k, v)
    return engine


def test_segpl_binary_cut():
    logits = torch.logit(torch.tensor([0.2, 0.45, 0.55, 0.9])).view(1, 1, 2, 2)
    engine = _engine({SSLKeys.UNLABELED_PRED: logits})
    SegPLHandler(threshold=0.5).attach(engine)
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    out = engine.state.output
    assert out[SSLKeys.PSEUDO_LABEL].flatten().tolist() == [0, 0, 1, 1]
    assert SSLKeys.PSEUDO_MASK not in out
    assert not out[SSLKeys.PSEUDO_LABEL].requires_grad


def test_segpl_multiclass_masks_low_confidence():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.05, 0.05, 0.9]])  # 3 voxels, 3 classes
    logits = probs.log().T.reshape(1, 3, 3, 1)
    engine = _engine({SSLKeys.UNLABELED_PRED: logits})
    SegPLHandler(threshold=0.6).attach(engine)
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    out = engine.state.output
    assert out[SSLKeys.PSEUDO_LABEL].flatten().tolist() == [0, 1, 2]
    assert out[SSLKeys.PSEUDO_MASK].flatten().tolist() == [1, 0, 1]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 2])
def test_segpl_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        SegPLHandler(threshold=threshold)


def test_temperature_softens_probabilities():
    logits = torch.full((1, 1, 1, 1), 2.0)  # sigmoid(2) = 0.881, sigmoid(1) = 0.731
    assert hard_pseudo_labels(logits, 0.8, temperature=1.0)[0].item() == 1
    assert hard_pseudo_labels(logits, 0.8, temperature=2.0)[0].item() == 0


def test_soft_cut_tends_to_hard_cut_and_carries_threshold_gradient():
    logits = torch.linspace(-3, 3, 32).view(2, 1, 4, 4)  # no voxel sits exactly at p = 0.5
    t = torch.tensor(0.5, requires_grad=True)
    hard, _ = hard_pseudo_labels(logits, 0.5)
    soft, _ = soft_pseudo_labels(logits, t, tau=1e-4)
    assert torch.allclose(soft, hard, atol=1e-3)
    soft, _ = soft_pseudo_labels(logits, t, tau=0.1)
    soft.sum().backward()
    p = torch.sigmoid(logits)
    s = torch.sigmoid((p - 0.5) / 0.1)
    # d/dT sigmoid((p - T)/tau) = -s(1 - s)/tau
    assert t.grad.item() == pytest.approx(float((-s * (1 - s) / 0.1).sum()), rel=1e-5)


def test_weight_schedule_warmup_then_ramp():
    engine = Engine(lambda e, b: None)
    UnsupervisedWeightSchedule(max_weight=2.0, warmup=1, ramp=2, unit="epochs").attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.unsup_weight))
    engine.run(range(2), max_epochs=4)  # progress 0, .5, 1, 1.5, 2, 2.5, 3, 3.5 epochs
    assert seen == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0])


def test_weight_schedule_iterations_and_bad_args():
    engine = Engine(lambda e, b: None)
    UnsupervisedWeightSchedule(max_weight=1.0, warmup=2, ramp=4, unit="iterations").attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.unsup_weight))
    engine.run(range(8), max_epochs=1)
    assert seen == pytest.approx([0, 0, 0, 0.25, 0.5, 0.75, 1.0, 1.0])
    with pytest.raises(ValueError, match="unit"):
        UnsupervisedWeightSchedule(unit="steps")
    with pytest.raises(ValueError, match="warmup"):
        UnsupervisedWeightSchedule(warmup=-1)


def test_offline_handler_moves_batch_pseudo_label():
    pl = torch.randint(0, 2, (2, 1, 4, 4)).float()
    engine = _engine({}, unlabeled_batch={"image": torch.zeros(2, 1, 4, 4), "pseudo_label": pl})
    OfflinePseudoLabelHandler().attach(engine)
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    assert torch.equal(engine.state.output[SSLKeys.PSEUDO_LABEL], pl)
    engine.state.unlabeled_batch = {"image": torch.zeros(1)}
    with pytest.raises(KeyError, match="medssl pseudolabel"):
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)


def test_stats_and_collapse_warning():
    engine = _engine()
    handler = PseudoLabelStatsHandler(patience=3)
    handler.attach(engine)
    pseudo = torch.zeros(2, 1, 4, 4)
    pseudo[0, 0, :2] = 1  # 8 of 32 voxels foreground
    mask = torch.ones(2, 1, 4, 4)
    mask[1] = 0  # half the voxels kept, all foreground in the kept half is 8/16
    engine.state.output = {SSLKeys.PSEUDO_LABEL: pseudo, SSLKeys.PSEUDO_MASK: mask, SSLKeys.THRESHOLD: torch.tensor([0.4, 0.6])}
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
    stats = engine.state.pseudo_label_stats
    assert stats["pl_kept_fraction"] == pytest.approx(0.5)
    assert stats["pl_foreground_fraction"] == pytest.approx(0.5)
    assert stats["threshold_mean"] == pytest.approx(0.5) and stats["threshold_std"] == pytest.approx(0.1)
    assert ssl_scalars(engine.state.output)["threshold_mean"] == pytest.approx(0.5)
    engine.state.output = {SSLKeys.PSEUDO_LABEL: torch.zeros(2, 1, 4, 4)}
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
    assert engine.state.pseudo_label_collapsed is None
    with pytest.warns(RuntimeWarning, match="collapsed"):
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
    assert engine.state.pseudo_label_collapsed is not None


def _bpl_engine(fit, spatial=(16, 16), source="student"):
    torch.manual_seed(0)
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = _engine(unsup_weight=1.0)
    engine.network, engine.optimizer = net, opt
    head = ThresholdHead(2, in_channels=12, scope="per_image")
    handler = BayesianPseudoLabelHandler(head, feature_layer="model.1", fit=fit, prior_mu=0.5, prior_std=0.1,
                                         source=source)  # fmt: skip
    handler.attach(engine)
    return engine, net, head, handler


def _joint_pass(engine, net, n_l, n_u, classes=1):
    """The trainer's joint forward of ``n_l`` labelled and ``n_u`` unlabelled images (the head reads its features)."""
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    pred = net(torch.randn(n_l + n_u, 1, 16, 16))
    label = torch.randint(0, max(2, classes), (n_l, 1, 16, 16)).float()
    engine.state.output = {SSLKeys.PRED: pred[:n_l], SSLKeys.LABEL: label, SSLKeys.UNLABELED_PRED: pred[n_l:]}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    return engine.state.output


def test_bpl_adds_head_to_optimizer_and_kl_term():
    engine, net, head, _ = _bpl_engine("kl_only")
    assert len(engine.optimizer.param_groups) == 2
    out = _joint_pass(engine, net, 1, 2)
    assert out[SSLKeys.PSEUDO_LABEL].shape == (2, 1, 16, 16)
    assert set(out[SSLKeys.PSEUDO_LABEL].unique().tolist()) <= {0.0, 1.0}
    assert out[SSLKeys.THRESHOLD].shape == (2, 1)
    # at initialisation the head predicts the prior exactly, so the KL is 0
    assert out[SSLKeys.LOSS_TERMS]["kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_bpl_kl_only_head_learns_only_from_kl():
    engine, net, head, _ = _bpl_engine("kl_only")
    out = _joint_pass(engine, net, 2, 2)
    pseudo = out[SSLKeys.PSEUDO_LABEL]
    assert not pseudo.requires_grad  # the hard cut passes no gradient to the threshold
    assert set(out[SSLKeys.LOSS_TERMS]) == {"kl"}
    data_term = torch.nn.functional.binary_cross_entropy_with_logits(out[SSLKeys.UNLABELED_PRED], pseudo)
    head.zero_grad()
    data_term.backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in head.parameters())


def test_bpl_elbo_head_learns_from_the_labelled_evidence():
    engine, net, head, _ = _bpl_engine("elbo")
    out = _joint_pass(engine, net, 2, 2)
    assert not out[SSLKeys.PSEUDO_LABEL].requires_grad and not out[SSLKeys.THRESHOLD].requires_grad
    fit = out[SSLKeys.LOSS_TERMS]["threshold_fit"]
    head.zero_grad()
    fit.backward()
    last_bias = head.net[-1].bias.grad
    assert last_bias is not None and last_bias[0].abs() > 0
    assert all(p.grad is None for p in net.parameters())  # the predictions are detached: only T learns from it


def test_bpl_from_the_ema_teacher_cuts_the_teacher_with_the_students_threshold():
    engine, net, _, _ = _bpl_engine("elbo", source="teacher")
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    pred = net(torch.randn(3, 1, 16, 16))
    teacher = torch.full((2, 1, 16, 16), -1.0)
    teacher[:, :, :8] = 1.0  # the teacher's top half is foreground at any cut between 0.27 and 0.73
    engine.state.output = {
        SSLKeys.PRED: pred[:1], SSLKeys.LABEL: torch.ones(1, 1, 16, 16), SSLKeys.UNLABELED_PRED: pred[1:],
        SSLKeys.TEACHER_PRED: teacher,
    }
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    out = engine.state.output
    threshold = out[SSLKeys.THRESHOLD]
    assert ((threshold > 0.4) & (threshold < 0.6)).all()  # the head, at the prior N(0.5, 0.1), on the student
    expected = torch.zeros(2, 1, 16, 16)
    expected[:, :, :8] = 1.0
    assert torch.equal(out[SSLKeys.PSEUDO_LABEL], expected)  # the teacher's cut, not the student's
    assert "threshold_fit" in out[SSLKeys.LOSS_TERMS]  # the head still learns from the student's labelled evidence


def test_bpl_per_pixel_threshold_resized_to_prediction():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,))
    engine = _engine(unsup_weight=0.5)
    engine.network, engine.optimizer = net, torch.optim.SGD(net.parameters(), lr=0.1)
    head = ThresholdHead(2, in_channels=8, scope="per_pixel")
    BayesianPseudoLabelHandler(head, feature_layer="model.1.submodule", fit="elbo").attach(engine)
    out = _joint_pass(engine, net, 1, 2, classes=3)
    assert out[SSLKeys.THRESHOLD].shape == (2, 1, 16, 16)
    assert out[SSLKeys.PSEUDO_MASK].shape == (2, 1, 16, 16)  # multi-class: confident voxels kept
    assert ((out[SSLKeys.THRESHOLD] > 0) & (out[SSLKeys.THRESHOLD] < 1)).all()


def test_bpl_unknown_layer_is_named():
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    engine = _engine()
    engine.network, engine.optimizer = net, torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'decoder.nope'"):
        BayesianPseudoLabelHandler(ThresholdHead(2, 4), feature_layer="decoder.nope").attach(engine)


def test_threshold_head_starts_at_prior():
    head = ThresholdHead(3, 8, init_mu=0.7, init_std=0.15)
    mu, logvar = head(torch.randn(2, 8, 4, 4, 4))
    assert torch.allclose(mu, torch.full_like(mu, 0.7))
    assert torch.allclose(logvar, torch.full_like(logvar, 2 * math.log(0.15)))
