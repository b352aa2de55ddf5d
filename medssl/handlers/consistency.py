"""The mean-teacher consistency loss (Tarvainen & Valpola, NeurIPS 2017; UA-MT's form for segmentation).

The student's softmax (sigmoid) on the unlabelled images should match its EMA teacher's
(:class:`~medssl.handlers.EMATeacher`): ``mean((p_student - p_teacher)^2)`` over voxels and classes, weighted by the
unsupervised weight (the trainer's schedule; UA-MT ramps it with a sigmoid to 0.1). Input noise is the two models'
different weights and the loader's augmentation.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.engines.keys import SSLKeys
from medssl.transforms.thresholding import probabilities

__all__ = ["MeanTeacherConsistency"]


class MeanTeacherConsistency:
    """Hand over ``consistency = w * mean((p_student - p_teacher)^2)`` after the forward pass."""

    def attach(self, engine: Engine) -> None:
        """Run after every forward pass (after the teacher predicted, before the loss)."""
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        student, teacher = out.get(SSLKeys.UNLABELED_PRED), out.get(SSLKeys.TEACHER_PRED)
        if student is None or teacher is None:
            return
        weight = float(getattr(engine.state, "unsup_weight", 1.0))
        mse = torch.mean((probabilities(student) - probabilities(teacher.detach())) ** 2)
        out.setdefault(SSLKeys.LOSS_TERMS, {})["consistency"] = weight * mse
