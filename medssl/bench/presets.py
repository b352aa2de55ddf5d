"""The accuracy benchmark's presets: its tasks with their sizes and budgets, fractions, seeds, methods and
perturbations, and the phantom datasets a preset trains on when no real datalist is given."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medssl.workflows.sizes import SMALL_BRATS2D, SMALL_LUNG
from medssl.data.datalist import load_datalist
from medssl.data.synthetic import synthesize

__all__ = ["TaskSetting", "Preset", "PRESETS", "PHANTOM_RUNS", "dataset"]

PHANTOM_RUNS = ("lower_bound", "upper_bound", "segpl", "bpl_kl_only", "bpl_elbo", "ts_ce", "ts_gce", "ts_bce", "ts_sce")


@dataclass(frozen=True)
class TaskSetting:
    """A task of a preset: its data and the bundle settings that size it."""

    cases: int
    size: int
    iterations: int
    overrides: dict[str, Any]
    evaluations: int = 5
    #: unsupervised weight warm-up and ramp, as fractions of the run (pseudo-labels start once the model segments)
    warmup_fraction: float = 0.2
    ramp_fraction: float = 0.3


@dataclass(frozen=True)
class Preset:
    """Tasks, fractions, seeds, methods and perturbations of one benchmark."""

    tasks: dict[str, TaskSetting]
    fractions: tuple[float, ...] = (0.3, 0.5, 0.7)
    seeds: tuple[int, ...] = (0, 1, 2)
    #: the runs of the phantom presets: the bounds, the EM pseudo-labels, teacher-student with each loss (the newer
    #: methods are measured on the real-data tracks; pass --method to add them here)
    methods: tuple[str, ...] = PHANTOM_RUNS
    noise_std: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    fgsm_eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    #: (task, seed) chains run side by side, each with cores / jobs torch threads; tiny networks on a CPU gain
    #: almost nothing from a second thread, so two single-threaded jobs nearly double the throughput there
    jobs: int = 1


PRESETS: dict[str, Preset] = {
    # Every method, fraction and seed on small phantoms: under an hour on 2 CPU cores.
    "small": Preset(
        tasks={
            "lung_vessel": TaskSetting(
                cases=16, size=48, iterations=150, overrides=SMALL_LUNG.overrides(), warmup_fraction=0.4,
                ramp_fraction=0.3,
            ),
            "brats2d": TaskSetting(
                cases=10, size=48, iterations=100, overrides=SMALL_BRATS2D.overrides(), warmup_fraction=0.4,
                ramp_fraction=0.3,
            ),
        },
        jobs=2,
    ),
    # For a GPU: the bundles' own networks and patch sizes, on larger phantoms or on real data (--datalist).
    "full": Preset(
        tasks={
            "lung_vessel": TaskSetting(cases=60, size=128, iterations=20000, overrides={}, evaluations=40),
            "brats2d": TaskSetting(cases=60, size=128, iterations=20000, overrides={}, evaluations=40),
        }
    ),
}


def _brats_slices(cases: int, size: int, seed: int, out: Path) -> Path:
    """Synthetic BraTS volumes, laid out as a BraTS 2018 folder and cut into axial slices by ``prepare_brats``."""
    from medssl.data.brats import MODALITIES, prepare_brats

    datalist = out / "slices" / "datalist.json"
    if datalist.is_file():
        return datalist
    synth = synthesize("brats", cases=cases, size=size, seed=seed, out=out / "synth")
    for entry in load_datalist(synth)["training"]:
        case = out / "brats" / entry["case_id"]
        case.mkdir(parents=True, exist_ok=True)
        for modality, image in zip(MODALITIES, entry["image"]):
            shutil.copyfile(image, case / f"{entry['case_id']}_{modality}.nii.gz")
        shutil.copyfile(entry["label"], case / f"{entry['case_id']}_seg.nii.gz")
    prepare_brats(out / "brats", out / "prepared", slices2d=out / "slices")
    return datalist


def dataset(task: str, setting: TaskSetting, out: Path, datalist: str | None = None) -> Path:
    """The dataset of ``task``: ``datalist`` when given, else the preset's phantoms (written under ``out/data`` once)."""
    if datalist:
        return Path(datalist)
    if task == "lung_vessel":
        path = out / "data" / "lung_vessel" / "dataset.json"
        return (
            path if path.is_file() else synthesize("lung_vessel", setting.cases, setting.size, seed=0, out=path.parent)
        )
    return _brats_slices(setting.cases, setting.size, seed=0, out=out / "data" / "brats2d")
