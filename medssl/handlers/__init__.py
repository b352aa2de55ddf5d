"""Ignite handlers: the pieces semi-supervised methods are made of.

Pseudo-label sources and E-steps (the student's or an EMA teacher's predictions cut at a fixed or learned threshold,
a teacher's files, weak-to-strong views with a fixed, learned or self-adaptive cut and optional distribution
alignment, copy-paste mixing), consistency
losses (mean teacher, VAT), the unsupervised weight schedule, gates, statistics, checkpoints.
"""

from medssl.handlers.adaptive_threshold import SelfAdaptiveThreshold
from medssl.handlers.consistency import MeanTeacherConsistency
from medssl.handlers.copy_paste import CopyPasteHandler
from medssl.handlers.distribution_alignment import DistributionAlignment
from medssl.handlers.ema_teacher import EMATeacher
from medssl.handlers.gate import LabelledForegroundGate, PseudoLabelGate
from medssl.handlers.learned_threshold import LearnedThreshold
from medssl.handlers.offline_pseudo_label import OfflinePseudoLabelHandler
from medssl.handlers.pseudo_label import BayesianPseudoLabelHandler, PseudoLabelHandler, SegPLHandler
from medssl.handlers.pseudo_label_stats import PseudoLabelStatsHandler, ssl_scalars
from medssl.handlers.threshold import FixedThreshold, Threshold
from medssl.handlers.vat import VATHandler
from medssl.handlers.weak_strong import WeakToStrongHandler
from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule, ramp_weight

__all__ = [
    "BayesianPseudoLabelHandler",
    "CopyPasteHandler",
    "DistributionAlignment",
    "EMATeacher",
    "FixedThreshold",
    "LabelledForegroundGate",
    "LearnedThreshold",
    "MeanTeacherConsistency",
    "OfflinePseudoLabelHandler",
    "PseudoLabelGate",
    "PseudoLabelHandler",
    "PseudoLabelStatsHandler",
    "SegPLHandler",
    "SelfAdaptiveThreshold",
    "Threshold",
    "UnsupervisedWeightSchedule",
    "VATHandler",
    "WeakToStrongHandler",
    "ramp_weight",
    "ssl_scalars",
]
