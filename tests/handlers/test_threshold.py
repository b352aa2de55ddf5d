"""The threshold contract: every registered cut is a :class:`Threshold` that returns a cut broadcastable over the
logits and a dict of loss terms, declares whether the gate range-checks it, and round-trips its state under its name;
a new cut is a class and a registry entry."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.networks.nets import UNet

from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers import FixedThreshold, LearnedThreshold, SelfAdaptiveThreshold, Threshold
from medssl.handlers.weak_strong import WeakToStrongHandler
from medssl.methods import CUTS, MethodContext, build_method, resolve_settings
from medssl.networks import ThresholdHead

CLASSES = 3


def _context():
    torch.manual_seed(0)
    net = UNet(2, 1, CLASSES, channels=(4, 8), strides=(2,), num_res_units=0)
    # "model.1" of this UNet: the decoder stage before the output layer, 12 channels at full resolution
    return MethodContext(network=net, head=ThresholdHead(2, in_channels=12), feature_layer="model.1")


def _engine(net):
    engine = Engine(lambda e, b: e.state.output)
    engine.register_events(*IterationEvents)
    engine.register_events(*SSLEvents)
    engine.state.output, engine.state.device, engine.state.unsup_weight = {}, torch.device("cpu"), 1.0
    engine.network, engine.optimizer = net, torch.optim.SGD(net.parameters(), lr=0.1)
    return engine


def _cut_once(cut, engine, net):
    """One joint pass (2 labelled, 2 unlabelled images), then the cut of the unlabelled predictions."""
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    logits = net(torch.randn(4, 1, 16, 16))
    engine.state.output = {SSLKeys.PRED: logits[:2], SSLKeys.LABEL: torch.randint(0, CLASSES, (2, 1, 16, 16))}
    return logits[2:], cut(engine, logits[2:])


@pytest.mark.parametrize("name", list(CUTS))
def test_every_registered_cut_keeps_the_contract(name):
    context = _context()
    cut = CUTS[name](resolve_settings("fixmatch"), context)
    assert isinstance(cut, Threshold)
    assert isinstance(cut.range_gated, bool) and isinstance(cut.name, str) and cut.name
    engine = _engine(context.network)
    cut.attach(engine)
    logits, (threshold, terms) = _cut_once(cut, engine, context.network)
    assert isinstance(terms, dict) and all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in terms.values())
    assert not threshold.requires_grad and threshold.shape[0] == logits.shape[0]
    as_map = Threshold.as_map(threshold, logits.ndim)
    assert torch.broadcast_shapes(as_map.shape, logits[:, :1].shape) == logits[:, :1].shape
    assert ((as_map > 0) & (as_map < 1)).all()
    # its state round-trips: a fresh cut loaded with it cuts the next batch as the original does
    state = cut.state_dict()
    resumed = CUTS[name](resolve_settings("fixmatch"), context)
    resumed.load_state_dict(state)
    again = resumed.state_dict()
    assert set(again) == set(state) and all(torch.equal(again[k], v) for k, v in state.items())
    if name != "learned":  # the learned cut samples its threshold: same state, other draws
        batch = torch.randn(2, CLASSES, 16, 16)
        assert torch.equal(cut(engine, batch)[0], resumed(engine, batch)[0])


def test_the_cuts_and_what_they_declare():
    context = _context()
    built = {name: build(resolve_settings("fixmatch"), context) for name, build in CUTS.items()}
    assert {name: type(cut) for name, cut in built.items()} == {
        "fixed": FixedThreshold, "learned": LearnedThreshold, "adaptive": SelfAdaptiveThreshold
    }
    assert {name: cut.range_gated for name, cut in built.items()} == {"fixed": True, "learned": True, "adaptive": False}
    assert len({cut.name for cut in built.values()}) == len(built)  # one checkpoint key each
    assert built["fixed"].state_dict() == {} and built["learned"].state_dict() == {}  # the head is the bundle's
    with pytest.raises(ValueError, match="keeps no state"):
        built["fixed"].load_state_dict({"value": torch.tensor(0.5)})


def test_a_cut_must_implement_the_call_and_name_itself():
    with pytest.raises(TypeError, match="`name`"):

        class Nameless(Threshold):  # noqa: F841
            def __call__(self, engine, logits_u):
                return torch.ones(logits_u.shape[0], 1), {}

    class Uncallable(Threshold):
        name = "uncallable"

    with pytest.raises(TypeError, match="abstract"):
        Uncallable()


class _MedianCut(Threshold):
    """A toy cut: each image's median confidence."""

    name = "median_threshold"

    def __call__(self, engine, logits_u):
        confidence = torch.softmax(logits_u.detach(), 1).amax(1).flatten(1)
        return confidence.median(1).values.unsqueeze(1), {}


def test_a_new_cut_is_a_class_and_a_registry_entry(monkeypatch):
    monkeypatch.setitem(CUTS, "median", lambda settings, context: _MedianCut())
    context = _context()
    built = build_method("fixmatch", {"cut": "median"}, network=context.network)
    (handler,) = [h for h in built.handlers if isinstance(h, WeakToStrongHandler)]
    assert isinstance(handler.threshold, _MedianCut)
    assert "median_threshold" in built.state_dict()
    monkeypatch.delitem(CUTS, "median")
    with pytest.raises(ValueError, match="cut must be one of"):
        build_method("fixmatch", {"cut": "median"}, network=context.network)
