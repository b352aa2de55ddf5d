"""The EMA teacher (mean teacher, Tarvainen & Valpola, NeurIPS 2017): a moving average of the student's weights.

The teacher is a copy of the network whose weights follow the student's after every optimiser step,

    theta'_t = a_t * theta'_{t-1} + (1 - a_t) * theta_t,    a_t = min(1 - 1 / (t + 1), decay)

(the warm-up of ``a_t`` lets the teacher follow the young student closely, as the mean-teacher and UA-MT code do).
Buffers (batch-norm statistics) are averaged the same way. Before each forward pass the teacher predicts the
unlabelled images (``TEACHER_PRED``, no gradient, eval mode): the pseudo-label source of any method that takes it
(SegPL, Bayesian pseudo-labels, copy-paste), and the target of the mean-teacher consistency loss.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_in_range
from medssl.engines.keys import SSLEvents, SSLKeys

__all__ = ["EMATeacher", "ema_update"]


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """``teacher = alpha * teacher + (1 - alpha) * student`` for every parameter and floating-point buffer."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if torch.is_floating_point(t):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(s)


class EMATeacher:
    """Keep an EMA teacher of ``network`` and write its predictions of the unlabelled images.

    Args:
        network: the student (the teacher starts as a copy of it).
        decay: the EMA decay ``a`` once warmed up.
        restart_when_unsupervised: copy the student into the teacher at the first iteration whose unsupervised
            weight is positive (BCP: the teacher starts from the supervised pre-training).

    Raises:
        ValueError: ``decay`` outside [0, 1).
    """

    #: the key of its state (the teacher's weights) in a method's checkpoint
    name = "ema_teacher"

    def __init__(self, network: torch.nn.Module, decay: float = 0.99, restart_when_unsupervised: bool = False) -> None:
        self.decay = check_in_range("decay", decay, 0.0, 1.0, high_inclusive=False)
        self.teacher = copy.deepcopy(getattr(network, "module", network))
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.restart_when_unsupervised = restart_when_unsupervised
        self._restarted = False

    def attach(self, engine: Engine) -> None:
        """Predict before each forward pass, update after each optimiser step."""
        self.teacher.to(engine.state.device)
        engine.add_event_handler(SSLEvents.INPUTS_READY, self.predict)
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.update)

    def _student(self, engine: Engine) -> torch.nn.Module:
        return getattr(engine.network, "module", engine.network)

    def predict(self, engine: Engine) -> None:
        out = engine.state.output
        if self.restart_when_unsupervised and not self._restarted and float(getattr(engine.state, "unsup_weight", 0)) > 0:
            self.teacher.load_state_dict(self._student(engine).state_dict())
            self._restarted = True
        images = out.get(SSLKeys.UNLABELED_IMAGE)
        if images is None:
            return
        self.teacher.eval()
        with torch.no_grad():
            out[SSLKeys.TEACHER_PRED] = engine.inferer(images, self.teacher)

    def update(self, engine: Engine) -> None:
        step = int(engine.state.iteration)
        ema_update(self.teacher, self._student(engine), min(1.0 - 1.0 / (step + 1), self.decay))

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "restarted": torch.tensor(int(self._restarted))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self._restarted = bool(int(state["restarted"]))
