"""Keys of ``engine.state.output`` in medssl's semi-supervised engines, and the events the trainer adds to MONAI's."""

from __future__ import annotations

from ignite.engine import EventEnum
from monai.utils import CommonKeys, StrEnum

__all__ = ["SSLKeys", "SSLEvents"]


class SSLKeys(StrEnum):
    """Keys of the semi-supervised trainer's iteration output.

    ``IMAGE``, ``LABEL``, ``PRED`` and ``LOSS`` are MONAI's own keys, so MONAI handlers (``StatsHandler``,
    ``from_engine``, metrics) read the labelled part exactly as from a ``SupervisedTrainer``.
    """

    IMAGE = CommonKeys.IMAGE
    LABEL = CommonKeys.LABEL
    PRED = CommonKeys.PRED
    LOSS = CommonKeys.LOSS
    UNLABELED_IMAGE = "unlabeled_image"
    UNLABELED_PRED = "unlabeled_pred"
    PSEUDO_LABEL = "pseudo_label"
    PSEUDO_MASK = "pseudo_mask"
    THRESHOLD = "threshold"
    LOSS_TERMS = "loss_terms"
    PSEUDO_STATS = "pseudo_label_stats"
    #: logits of a teacher (an EMA of the student) on the unlabelled images
    TEACHER_PRED = "teacher_pred"
    #: weight of the supervised loss this iteration (default 1; 0 when a handler replaces it, or gates it off)
    SUPERVISED_WEIGHT = "supervised_weight"


class SSLEvents(EventEnum):
    """Events of :class:`~medssl.engines.SemiSupervisedTrainer` besides MONAI's ``IterationEvents``.

    ``INPUTS_READY`` fires after the labelled and unlabelled batches are on the device (in ``engine.state.output``
    under ``IMAGE``, ``LABEL`` and ``UNLABELED_IMAGE``) and before the forward pass: a handler may replace them (mixed
    images, views), drop the unlabelled images (``UNLABELED_IMAGE`` set to None) or run its own passes (a teacher's
    predictions). Handlers that need more passes after the forward pass run them at ``FORWARD_COMPLETED``.
    """

    INPUTS_READY = "ssl_inputs_ready"
