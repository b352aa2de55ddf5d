"""What a training run names: its task (the bundle it trains, how it is scored) and its method.

A run name is a bound (``lower_bound``, ``upper_bound``: the registry's ``supervised`` method on the labelled cases
only, or with every training case labelled) or a variant of :data:`medssl.methods.VARIANTS` (``segpl``,
``bpl_elbo``, ``ts_gce``, ...); :func:`run_settings` turns it into bundle settings, the bundle's ``ssl_method`` and
overrides of its method block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medssl.checks import check_choice
from medssl.methods import READS, REGISTRY, VARIANTS, uses_unlabeled, variant

__all__ = ["TaskSpec", "TASKS", "BOUNDS", "METHODS", "run_settings", "reads_pseudo_labels"]


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task: the bundle it trains and how its predictions are scored."""

    bundle: str
    eval_task: str  # "binary", "brats" or "multiclass"
    channels: tuple[str, ...]


TASKS: dict[str, TaskSpec] = {
    "lung_vessel": TaskSpec("lung_vessel_ct_ssl_segmentation", "binary", ("foreground",)),
    "brats2d": TaskSpec("brats_mri_axial_slices_ssl_segmentation", "brats", ("WT", "TC", "ET")),
    "brats3d": TaskSpec("brats_mri_transbts_ssl_segmentation", "brats", ("WT", "TC", "ET")),
    "acdc": TaskSpec("acdc_mri_ssl_segmentation", "multiclass", ("RV", "Myo", "LV")),
    "la": TaskSpec("la_mri_ssl_segmentation", "binary", ("foreground",)),
}

#: The benchmarks' bounds, both the registry's ``supervised`` method: on the labelled cases only (``lower_bound``),
#: or on a split whose training cases are all labelled (``upper_bound``).
BOUNDS = {"lower_bound": "supervised", "upper_bound": "supervised"}


def _variant(name: str) -> tuple[str, dict[str, Any]]:
    return variant(BOUNDS[name] if name in BOUNDS else check_choice("method", name, (*BOUNDS, *VARIANTS)))


def run_settings(name: str) -> dict[str, Any]:
    """The bundle settings of run ``name``: a bound or a variant of :data:`medssl.methods.VARIANTS`.

    >>> run_settings("bpl_elbo")
    {'ssl_method': 'bpl', 'method#threshold_fit': 'elbo'}

    Raises:
        ValueError: an unknown name.
    """
    method, settings = _variant(name)
    return {"ssl_method": method, **{f"method#{k}": v for k, v in settings.items()}}


def reads_pseudo_labels(name: str) -> bool:
    """Whether run ``name`` trains on a teacher's pseudo-label files (the teacher is the same split's lower bound)."""
    return REGISTRY[_variant(name)[0]].reads == READS[2]


#: The runs of a comparison as bundle settings: the bounds, then every registered variant that trains on unlabelled
#: images (SegPL, Bayesian pseudo-labels, teacher-student with each loss).
METHODS: dict[str, dict[str, Any]] = {
    name: run_settings(name) for name in (*BOUNDS, *(v for v, (m, _) in VARIANTS.items() if uses_unlabeled(m)))
}
