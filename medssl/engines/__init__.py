"""Engines: the semi-supervised trainer, its output keys and events, optimisers by name."""

from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.engines.semi_supervised_trainer import SemiSupervisedTrainer, prepare_unlabeled_batch

__all__ = ["SSLEvents", "SSLKeys", "SemiSupervisedTrainer", "prepare_unlabeled_batch"]
