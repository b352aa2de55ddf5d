"""The E-step of pseudo-labelling: the predictions of the unlabelled images cut with a threshold.

SegPL (EM pseudo-labels, Xu et al., arXiv 2305.01747) cuts at a fixed threshold; Bayesian pseudo-labels (SegPL-VI,
the same paper) at a learned one (:class:`~medssl.handlers.learned_threshold.LearnedThreshold`); any cut (a
:class:`~medssl.handlers.threshold.Threshold`) will do. Either cuts the student's own predictions or, with
``source="teacher"``, an EMA teacher's (:class:`~medssl.handlers.EMATeacher`, attached before). Binary networks (one
output channel): pseudo-label ``sigmoid(z / temperature) > T``. Multi-class: the argmax, where the top softmax
probability exceeds ``T`` (other voxels are masked out of the loss). The M-step is the trainer's unsupervised loss on
them, weighted by the schedule; a :class:`~medssl.handlers.gate.PseudoLabelGate` switches it (and the threshold's KL)
off for pseudo-labels with nothing to learn from (and, for a cut that is ``range_gated``, for a threshold out of its
range).
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_choice, check_positive
from medssl.engines.keys import SSLKeys
from medssl.handlers.gate import PseudoLabelGate
from medssl.handlers.learned_threshold import LearnedThreshold
from medssl.handlers.threshold import FixedThreshold, Threshold
from medssl.transforms.thresholding import hard_pseudo_labels

__all__ = ["PseudoLabelHandler", "SegPLHandler", "BayesianPseudoLabelHandler", "SOURCES"]

SOURCES = ("student", "teacher", "alternate")


class PseudoLabelHandler:
    """Cut the unlabelled predictions of ``source`` with ``threshold`` after the forward pass.

    Writes ``PSEUDO_LABEL`` (and ``PSEUDO_MASK`` for multi-class, ``THRESHOLD``) and the threshold's loss terms; when
    ``gate`` closes, no pseudo-label (so no unsupervised loss) and no KL this iteration (``engine.state.gated`` counts
    such iterations).

    Args:
        threshold: the cut, a :class:`Threshold` (:class:`FixedThreshold`, :class:`LearnedThreshold`, ...).
        source: ``"student"`` (the trainer's prediction), ``"teacher"`` or ``"alternate"`` (``TEACHER_PRED``: the EMA
            teacher's, or the fusion of two EMA teachers updated in turn).
        temperature: logits are divided by it before the sigmoid/softmax (1: plain probabilities).
        gate: a :class:`PseudoLabelGate`, or None.
    """

    def __init__(
        self,
        threshold: Threshold,
        source: str = "student",
        temperature: float = 1.0,
        gate: PseudoLabelGate | None = None,
    ) -> None:
        self.threshold = threshold
        self.source = check_choice("source", source, SOURCES)
        self.temperature = check_positive("temperature", temperature)
        self.gate = gate

    def attach(self, engine: Engine) -> None:
        """Run the E-step on ``engine`` after every forward pass."""
        self.threshold.attach(engine)
        engine.state.gated = 0
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        logits = out.get(SSLKeys.UNLABELED_PRED)
        if logits is None:
            return
        cut_from = out.get(SSLKeys.TEACHER_PRED) if self.source != "student" else logits
        if cut_from is None:
            raise RuntimeError(f"source={self.source!r} needs its teacher handler attached before this one")
        threshold, terms = self.threshold(engine, logits)
        pseudo, mask = hard_pseudo_labels(cut_from, Threshold.as_map(threshold, logits.ndim), self.temperature)
        ranged = threshold if self.threshold.range_gated else None
        if self.gate is not None and not self.gate(pseudo, mask, ranged):
            engine.state.gated += 1
            terms.pop("kl", None)
        else:
            out[SSLKeys.PSEUDO_LABEL] = pseudo
            if mask is not None:
                out[SSLKeys.PSEUDO_MASK] = mask
        out[SSLKeys.THRESHOLD] = threshold
        if terms:
            out.setdefault(SSLKeys.LOSS_TERMS, {}).update(terms)


class SegPLHandler(PseudoLabelHandler):
    """SegPL: the E-step with a fixed ``threshold`` in (0, 1) (see :class:`PseudoLabelHandler`).

    Raises:
        ValueError: ``threshold`` outside (0, 1) or ``temperature`` not positive.
    """

    def __init__(
        self, threshold: float = 0.5, temperature: float = 1.0, source: str = "student", gate: PseudoLabelGate | None = None
    ) -> None:
        super().__init__(FixedThreshold(threshold), source, temperature, gate)


class BayesianPseudoLabelHandler(PseudoLabelHandler):
    """Bayesian pseudo-labels: the E-step with a :class:`LearnedThreshold` built from these arguments (see there for
    ``fit``, ``samples``, ``tau``, ``kl_weight``; defaults follow the authors' released configurations:
    temperature 1, the threshold averaged over 256 draws).
    """

    def __init__(
        self,
        head: torch.nn.Module,
        feature_layer: str,
        prior_mu: float = 0.5,
        prior_std: float = 0.1,
        fit: str = "elbo",
        temperature: float = 1.0,
        tau: float = 0.05,
        kl_weight: float = 0.1,
        samples: int = 256,
        head_lr: float | None = None,
        source: str = "student",
        gate: PseudoLabelGate | None = None,
    ) -> None:
        threshold = LearnedThreshold(
            head, feature_layer, prior_mu=prior_mu, prior_std=prior_std, fit=fit, samples=samples, tau=tau,
            kl_weight=kl_weight, temperature=temperature, head_lr=head_lr,
        )  # fmt: skip
        super().__init__(threshold, source, temperature, gate)
        self.head = head
