from __future__ import annotations

import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

from medssl.engines import SemiSupervisedTrainer, SSLKeys
from medssl.handlers import SegPLHandler, UnsupervisedWeightSchedule


def _loaders(n_lab=4, n_unl=6, size=16, bs_l=2, bs_u=3):
    g = torch.Generator().manual_seed(0)
    lab = [
        {"image": torch.randn(1, size, size, generator=g), "label": (torch.rand(1, size, size, generator=g) > 0.5).float()}
        for _ in range(n_lab)
    ]
    unl = [{"image": torch.randn(1, size, size, generator=g)} for _ in range(n_unl)]
    return DataLoader(lab, batch_size=bs_l), DataLoader(unl, batch_size=bs_u)


def _net():
    torch.manual_seed(0)
    return UNet(2, 1, 1, channels=(4, 8), strides=(2,))


class _Recorder:
    """Record what the trainer hands to handlers after the forward pass."""

    def __init__(self):
        self.shapes = []

    def attach(self, engine):
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine):
        out = engine.state.output
        self.shapes.append((tuple(out[SSLKeys.PRED].shape), tuple(out.get(SSLKeys.UNLABELED_PRED, torch.zeros(0)).shape)))


def test_no_unlabelled_loader_is_exactly_supervised_training():
    dl, _ = _loaders()
    net_a, net_b = _net(), _net()
    loss = DiceCELoss(sigmoid=True)
    SemiSupervisedTrainer("cpu", 2, dl, net_a, torch.optim.SGD(net_a.parameters(), lr=0.1), loss).run()
    from monai.engines import SupervisedTrainer

    SupervisedTrainer("cpu", 2, dl, net_b, torch.optim.SGD(net_b.parameters(), lr=0.1), loss).run()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_joint_forward_splits_predictions_and_cycles_unlabelled():
    dl, du = _loaders(n_lab=6, n_unl=3, bs_l=2, bs_u=2)  # unlabelled loader (2 batches) shorter than labelled (3)
    rec = _Recorder()
    net = _net()
    trainer = SemiSupervisedTrainer(
        "cpu", 2, dl, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss(sigmoid=True),
        unlabeled_data_loader=du, train_handlers=[rec],
    )
    trainer.run()
    assert trainer.state.iteration == 6  # the epoch is defined by the labelled loader
    assert rec.shapes[0] == ((2, 1, 16, 16), (2, 1, 16, 16))
    assert rec.shapes[1] == ((2, 1, 16, 16), (1, 1, 16, 16))  # the last, short unlabelled batch
    assert rec.shapes[2] == ((2, 1, 16, 16), (2, 1, 16, 16))  # ... then it starts over
    assert trainer._unlabeled.passes == 3


def test_loss_is_supervised_plus_weighted_unsupervised():
    dl, du = _loaders()
    net = _net()
    trainer = SemiSupervisedTrainer(
        "cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.0), DiceCELoss(sigmoid=True),
        unlabeled_data_loader=du, unsup_weight=0.3, train_handlers=[SegPLHandler(0.5)],
    )
    trainer.run()
    terms = trainer.state.output[SSLKeys.LOSS_TERMS]
    expected = terms["supervised"] + terms["unsupervised"]  # logged as weighted in the total
    assert float(trainer.state.output[SSLKeys.LOSS]) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["unsup_weight"]) == pytest.approx(0.3)
    assert not trainer.state.output[SSLKeys.PRED].requires_grad  # the graph is released after the step


def test_a_supervised_run_logs_no_unsupervised_weight():
    dl, _ = _loaders()
    net = _net()
    trainer = SemiSupervisedTrainer("cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.0), DiceCELoss(sigmoid=True))
    trainer.run()
    terms = trainer.state.output[SSLKeys.LOSS_TERMS]
    assert "unsup_weight" not in terms and float(terms["supervised"]) > 0


def test_warmup_weight_zero_skips_unsupervised_term():
    dl, du = _loaders()
    net = _net()
    trainer = SemiSupervisedTrainer(
        "cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss(sigmoid=True),
        unlabeled_data_loader=du,
        train_handlers=[UnsupervisedWeightSchedule(max_weight=1.0, warmup=5), SegPLHandler(0.5)],
    )
    trainer.run()
    terms = trainer.state.output[SSLKeys.LOSS_TERMS]
    assert float(terms["unsupervised"]) == 0.0
    assert float(trainer.state.output[SSLKeys.LOSS]) == pytest.approx(float(terms["supervised"]))


def test_different_spatial_sizes_use_two_passes():
    dl, _ = _loaders(size=16)
    _, du = _loaders(size=24)
    rec = _Recorder()
    net = _net()
    SemiSupervisedTrainer(
        "cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss(sigmoid=True),
        unlabeled_data_loader=du, train_handlers=[rec],
    ).run()
    assert rec.shapes[0] == ((2, 1, 16, 16), (3, 1, 24, 24))


def test_empty_unlabelled_loader_is_a_clear_error():
    dl, _ = _loaders()
    net = _net()
    trainer = SemiSupervisedTrainer(
        "cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss(sigmoid=True),
        unlabeled_data_loader=DataLoader([], batch_size=1),
    )
    with pytest.raises(ValueError, match="unlabelled set is empty"):
        trainer.run()


def test_bad_arguments():
    dl, du = _loaders()
    net = _net()
    with pytest.raises(ValueError, match="unsup_weight"):
        SemiSupervisedTrainer("cpu", 1, dl, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss(), unsup_weight=-1)
