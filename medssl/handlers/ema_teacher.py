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
from medssl.transforms.thresholding import class_distribution, distribution_logits

__all__ = ["AlternateEMATeachers", "EMATeacher", "ema_update", "entropy_weighted_ensemble"]


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


def entropy_weighted_ensemble(first: torch.Tensor, second: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """AD-MT's fusion of two teachers' class probabilities ``(B, K, *spatial)``: each voxel weighs the teacher of the
    lower entropy more, ``w_i = exp(-H_i) / (exp(-H_1) + exp(-H_2))`` with ``H_i = -sum_k p_ik log2 p_ik``, and the
    weighted mean is sharpened, ``q^(1/temperature)`` renormalised (1: as is)."""
    eps = 1e-10
    h1 = -(first * torch.log2(first + eps)).sum(dim=1, keepdim=True)
    h2 = -(second * torch.log2(second + eps)).sum(dim=1, keepdim=True)
    w1 = torch.sigmoid(h2 - h1)  # exp(-h1) / (exp(-h1) + exp(-h2)), without overflow
    fused = w1 * first + (1.0 - w1) * second
    if temperature != 1.0:
        fused = fused.clamp_min(eps) ** (1.0 / temperature)
        fused = fused / fused.sum(dim=1, keepdim=True)
    return fused


class AlternateEMATeachers:
    """Two EMA teachers updated in turn, their predictions fused by entropy (AD-MT, Zhao et al., ECCV 2024,
    arXiv 2311.17325): the pseudo-label source ``source="alternate"``.

    Both teachers start as copies of the student. After each optimiser step only the active one follows the student
    (the EMA of :class:`EMATeacher`); the active one changes after a random number of iterations drawn uniformly from
    1 to ``period`` (AD-MT's random periodic alternation), so the two average different stretches of the student's
    path and disagree where it wavered. Before each forward pass both predict the unlabelled images and
    ``TEACHER_PRED`` is the logits of their fusion (:func:`entropy_weighted_ensemble`): where they disagree, the more
    certain teacher decides, voxel by voxel (AD-MT's "pixel confidence" conflict mode). The periods come from a
    generator of their own, seeded from the run's seed, so the loaders' random streams stay those of a run without it.

    Of AD-MT's recipe this is the teachers; not taken: its active teacher predicting in train mode (both predict in
    eval mode here, as medssl's EMA teacher does), the student's vote where the student and the teachers disagree,
    and the data augmentation that alternates with the teachers (the method's strong views and CutMix apply every
    iteration instead).

    Args:
        network: the student.
        decay: the EMA decay once warmed up (the warm-up of :class:`EMATeacher`).
        period: the longest stretch, in iterations, one teacher stays active (AD-MT's LA setting: 19, half an epoch).
        temperature: sharpening of the fused prediction (1: none, AD-MT's setting).

    Raises:
        ValueError: ``decay`` outside [0, 1), ``period`` below 1, ``temperature`` not positive.
    """

    name = "alternate_teachers"

    def __init__(self, network: torch.nn.Module, decay: float = 0.99, period: int = 19, temperature: float = 1.0):
        self.decay = check_in_range("decay", decay, 0.0, 1.0, high_inclusive=False)
        if int(period) != period or period < 1:
            raise ValueError(f"period must be a whole number of iterations, at least 1, got {period}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.period, self.temperature = int(period), float(temperature)
        student = getattr(network, "module", network)
        self.teachers = [copy.deepcopy(student), copy.deepcopy(student)]
        for teacher in self.teachers:
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.active, self.counter, self.stretch = 0, 0, 0
        self.generator = torch.Generator()

    def attach(self, engine: Engine) -> None:
        """Predict before each forward pass, update the active teacher after each optimiser step."""
        for teacher in self.teachers:
            teacher.to(engine.state.device)
        self.generator.manual_seed(torch.initial_seed())
        self.stretch = self._draw()
        engine.add_event_handler(SSLEvents.INPUTS_READY, self.predict)
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.update)

    def _draw(self) -> int:
        return int(torch.randint(1, self.period + 1, (1,), generator=self.generator))

    def predict(self, engine: Engine) -> None:
        out = engine.state.output
        images = out.get(SSLKeys.UNLABELED_IMAGE)
        if images is None:
            return
        with torch.no_grad():
            logits = []
            for teacher in self.teachers:
                teacher.eval()
                logits.append(engine.inferer(images, teacher))
            fused = entropy_weighted_ensemble(*(class_distribution(x.float()) for x in logits), self.temperature)
            out[SSLKeys.TEACHER_PRED] = distribution_logits(fused, logits[0].shape[1]).to(logits[0].dtype)

    def update(self, engine: Engine) -> None:
        step = int(engine.state.iteration)
        student = getattr(engine.network, "module", engine.network)
        ema_update(self.teachers[self.active], student, min(1.0 - 1.0 / (step + 1), self.decay))
        self.counter += 1
        if self.counter >= self.stretch:
            self.active, self.counter, self.stretch = 1 - self.active, 0, self._draw()

    def state_dict(self) -> dict[str, Any]:
        return {"teacher0": self.teachers[0].state_dict(), "teacher1": self.teachers[1].state_dict(),
                "turn": torch.tensor([self.active, self.counter, self.stretch]),
                "generator": self.generator.get_state()}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.teachers[0].load_state_dict(state["teacher0"])
        self.teachers[1].load_state_dict(state["teacher1"])
        self.active, self.counter, self.stretch = (int(v) for v in state["turn"])
        self.generator.set_state(state["generator"])
