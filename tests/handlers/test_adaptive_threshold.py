"""FreeMatch's self-adaptive threshold: its moving averages follow the paper's formulas, a rare class gets a low
cut, it resumes from a checkpoint, and FixMatch takes it by name (``fixmatch_sat``)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.networks.nets import UNet

from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers.adaptive_threshold import SelfAdaptiveThreshold
from medssl.handlers.gate import PseudoLabelGate
from medssl.handlers.weak_strong import STRONG_KEYS, WeakToStrongHandler
from medssl.losses import MaskedDiceCELoss
from medssl.methods import build_method, variant


def _logits(probs: torch.Tensor) -> torch.Tensor:
    return probs.log()  # softmax(log p) = p


def test_moving_averages_follow_the_formulas_from_one_over_c():
    """tau_t = m tau + (1 - m) mean(max q), p_t(c) = m p + (1 - m) mean(q(c)) from 1/C; tau_t(c) = tau_t p_t(c) /
    max p_t (MaxNorm), read at each voxel's most likely class."""
    # 2 images of 2 voxels, 3 classes: voxel probabilities by hand
    q = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    probs = q.reshape(2, 2, 3).permute(0, 2, 1)  # (B=2, C=3, 2 voxels)
    sat = SelfAdaptiveThreshold(momentum=0.5)
    cut, terms = sat(None, _logits(probs))
    assert terms == {}
    tau = 0.5 * (1 / 3) + 0.5 * (0.8 + 0.6 + 0.7 + 0.5) / 4
    means = 0.5 * torch.full((3,), 1 / 3, dtype=torch.float64) + 0.5 * q.double().mean(0)
    assert float(sat.global_threshold) == pytest.approx(tau)
    assert torch.allclose(sat.class_means, means)
    per_class = tau * means / means.max()
    assert torch.allclose(sat.class_thresholds(), per_class)
    argmax = q.argmax(1).reshape(2, 1, 2)  # classes 0, 0 | 1, 0
    assert cut.shape == (2, 1, 2) and torch.allclose(cut.double(), per_class[argmax], atol=1e-6)
    sat(None, _logits(probs))  # a second step moves each average halfway again
    assert float(sat.global_threshold) == pytest.approx(0.5 * tau + 0.5 * (0.8 + 0.6 + 0.7 + 0.5) / 4)


def test_a_rare_class_is_kept_where_a_single_cut_would_drop_it():
    """Binary segmentation, foreground 5% of the voxels at probability 0.7: after the averages settle the
    background's cut is the mean confidence, the foreground's about 5% of it, so the uncertain foreground is kept
    (FixMatch's 0.95 drops all of it) and so is the confident background."""
    p = torch.full((1, 1, 20, 20), 0.02)
    p[..., :1, :] = 0.7  # 20 of 400 voxels: 5%
    logits = torch.logit(p)
    sat = SelfAdaptiveThreshold(momentum=0.9)
    for _ in range(200):
        cut, _ = sat(None, logits)
    fg_cut, bg_cut = float(cut[0, 0, 0, 0]), float(cut[0, 0, 5, 5])
    confidence = (20 * 0.7 + 380 * 0.98) / 400
    assert bg_cut == pytest.approx(confidence, abs=1e-4)
    assert fg_cut == pytest.approx(confidence * (20 * 0.7 + 380 * 0.02) / 400 / ((20 * 0.3 + 380 * 0.98) / 400), abs=1e-4)
    confidence_map = torch.maximum(p, 1 - p)
    kept = confidence_map >= cut
    assert kept[..., :1, :].all() and kept[..., 1:, :].all()
    assert not (confidence_map[..., :1, :] > 0.95).any()


def test_state_resumes_the_same_cuts():
    torch.manual_seed(0)
    logits = [torch.randn(2, 4, 6, 6) for _ in range(3)]
    sat, resumed = SelfAdaptiveThreshold(0.9), SelfAdaptiveThreshold(0.9)
    assert resumed.state_dict()["class_means"].numel() == 0  # nothing seen yet: nothing to resume
    sat(None, logits[0])
    sat(None, logits[1])
    state = {k: v.clone() for k, v in sat.state_dict().items()}
    resumed.load_state_dict(state)
    assert torch.equal(sat(None, logits[2])[0], resumed(None, logits[2])[0])


def _engine(net):
    engine = Engine(lambda e, b: e.state.output)
    engine.register_events(*IterationEvents)
    engine.register_events(*SSLEvents)
    engine.state.device = torch.device("cpu")
    engine.state.unsup_weight = 1.0
    engine.network, engine.inferer = net, (lambda x, n: n(x))
    engine.unsup_loss_function = MaskedDiceCELoss()
    return engine


def test_fixmatch_sat_cuts_with_it_and_the_gate_does_not_range_check_it():
    """``fixmatch_sat`` is FixMatch with the self-adaptive cut; the pseudo-label gate's range check (for a learned
    threshold) does not close on it when the background's cut passes 0.99; the method checkpoints its averages."""
    method, settings = variant("fixmatch_sat")
    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)
    built = build_method(method, settings, network=net)
    handler = next(h for h in built.handlers if isinstance(h, WeakToStrongHandler))
    assert isinstance(handler.threshold, SelfAdaptiveThreshold) and handler.threshold.momentum == 0.999
    handler.gate = PseudoLabelGate(0.005, (0.01, 0.99))
    weak = torch.zeros(2, 3, 8, 8)
    weak[:, 0], weak[:, 1, 0, 0] = 8.0, 12.0  # confident background; class 1 on one voxel of 64 (1.6%)
    handler.attach(engine := _engine(net))
    for range_checked, gated in ((False, 0), (True, 1)):
        handler.threshold.range_gated = range_checked
        handler.threshold.global_threshold = torch.tensor(0.995, dtype=torch.float64)  # a confident model's
        handler.threshold.class_means = torch.tensor([0.5, 0.45, 0.05], dtype=torch.float64)
        engine.state.gated = 0
        engine.state.unlabeled_batch = {"image": weak, STRONG_KEYS[0]: torch.rand(2, 1, 8, 8)}
        engine.state.output = {SSLKeys.UNLABELED_PRED: weak}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out = engine.state.output
        assert float(out[SSLKeys.THRESHOLD].mean()) > 0.99  # the mean cut is the background's, near 0.995
        assert engine.state.gated == gated and (SSLKeys.PSEUDO_LABEL in out) == (not gated)
    state = built.state_dict()  # the averages under the cut's name
    assert set(state) == {"weight_schedule", "adaptive_threshold"}
    assert float(state["adaptive_threshold"]["global_threshold"]) > 0.99
