"""Ignite handlers: pseudo-label sources and E-steps, the unsupervised weight schedule, statistics, checkpoints."""

from medssl.handlers.bayesian_pseudo_label import BayesianPseudoLabelHandler
from medssl.handlers.offline_pseudo_label import OfflinePseudoLabelHandler
from medssl.handlers.pseudo_label_stats import PseudoLabelStatsHandler, ssl_scalars
from medssl.handlers.segpl import SegPLHandler
from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule, ramp_weight

__all__ = [
    "BayesianPseudoLabelHandler",
    "OfflinePseudoLabelHandler",
    "PseudoLabelStatsHandler",
    "SegPLHandler",
    "UnsupervisedWeightSchedule",
    "ramp_weight",
    "ssl_scalars",
]
