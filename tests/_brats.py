"""Synthetic BraTS phantoms laid out as a BraTS 2018 folder (``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``)."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_brats_folder(root: Path, cases: int, size: int, seed: int) -> Path:
    """``cases`` phantoms of ``size`` voxels a side in ``root/brats``, as a BraTS release lays them out; returns it."""
    from medssl.data.brats import MODALITIES
    from medssl.data.datalist import load_datalist
    from medssl.data.synthetic import synthesize

    synthesize("brats", cases=cases, size=size, seed=seed, out=root / "synth")
    for entry in load_datalist(root / "synth" / "dataset.json")["training"]:
        case = root / "brats" / entry["case_id"]
        case.mkdir(parents=True)
        for modality, image in zip(MODALITIES, entry["image"]):
            shutil.copy(image, case / f"{entry['case_id']}_{modality}.nii.gz")
        shutil.copy(entry["label"], case / f"{entry['case_id']}_seg.nii.gz")
    return root / "brats"
