"""Safe loading and numerical guards: a checkpoint that needs arbitrary unpickling is refused before any of its code
runs; a NaN or Inf loss term or threshold stops training naming the iteration and the term, and the last good
checkpoint stays on disk."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

from medssl.engines import SemiSupervisedTrainer, SSLKeys
from medssl.errors import DataError
from medssl.checkpoints import load_state_dict_file, load_weights
from medssl.handlers.checkpoint import AtomicCheckpointSaver, resume_handlers
from medssl.handlers.nonfinite import NonFiniteGuard


class _Payload:
    """Unpickling this object creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def unsafe_checkpoint(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model_last.pt"
    torch.save({"model": torch.nn.Linear(2, 1).state_dict(), "payload": _Payload(marker)}, path)
    return path, marker


def test_unsafe_checkpoint_is_refused_and_runs_nothing(unsafe_checkpoint):
    path, marker = unsafe_checkpoint
    with pytest.raises(DataError, match="checkpoint refused: it holds a .* object, and unpickling it could run code") as err:
        load_state_dict_file(path)
    assert err.value.path == str(path)
    with pytest.raises(DataError, match="refused"):
        load_weights(torch.nn.Linear(2, 1), path)
    assert not marker.exists()


def test_resume_from_unsafe_checkpoint_is_refused(unsafe_checkpoint):
    path, marker = unsafe_checkpoint
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    for handler in resume_handlers(True, path, {"model": net}):
        handler.attach(engine)
    with pytest.raises(DataError, match="refused"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


class _NaNFrom(torch.nn.Module):
    """A supervised loss that turns NaN from its ``start``-th call on."""

    def __init__(self, start: int):
        super().__init__()
        self.loss, self.calls, self.start = DiceCELoss(sigmoid=True), 0, start

    def forward(self, pred, target):
        self.calls += 1
        value = self.loss(pred, target)
        return value * math.nan if self.calls >= self.start else value


class _NaNThresholdFrom:
    """Writes a threshold (NaN from the ``start``-th iteration on), as a Bayesian pseudo-label handler does."""

    def __init__(self, start: int):
        self.start = start

    def attach(self, engine):
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine):
        value = math.nan if engine.state.iteration >= self.start else 0.5
        engine.state.output[SSLKeys.THRESHOLD] = torch.full((2,), value)


@pytest.mark.parametrize("culprit, term", [("loss", "loss term 'supervised'"), ("threshold", "threshold")])
def test_nonfinite_stops_training_and_keeps_last_good_checkpoint(tmp_path, culprit, term):
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(1, 16, 16, generator=g), "label": (torch.rand(1, 16, 16, generator=g) > 0.5).float()}
            for _ in range(4)]  # fmt: skip
    torch.manual_seed(0)
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    bad_iteration = 5  # first iteration of epoch 3 (2 iterations per epoch)
    loss = _NaNFrom(bad_iteration) if culprit == "loss" else DiceCELoss(sigmoid=True)
    handlers = [NonFiniteGuard()] + ([_NaNThresholdFrom(bad_iteration)] if culprit == "threshold" else [])
    trainer = SemiSupervisedTrainer(
        "cpu", 4, DataLoader(data, batch_size=2), net, torch.optim.SGD(net.parameters(), lr=0.1), loss,
        train_handlers=handlers,
    )  # fmt: skip
    saver = AtomicCheckpointSaver(tmp_path, {"model": net})
    saver.attach(trainer)
    with pytest.raises(FloatingPointError, match=rf"non-finite {term} at epoch 3, iteration {bad_iteration}"):
        trainer.run()
    state = load_state_dict_file(saver.path)
    assert state["trainer"]["iteration"] == 4  # the end of epoch 2, the last good state
    for name, value in net.state_dict().items():  # nothing non-finite reached the weights
        assert torch.isfinite(value.float()).all()
        assert torch.equal(value, state["model"][name]), name
