"""DICOM Segmentation objects (highdicom) for a bundle's label map on the grid of its source series.

The segments come from the bundle: their names from ``metadata.json`` (``network_data_format.outputs.pred.channel_def``),
the label value of each from the bundle's own post-processing (so BraTS bundles that write 0, 1, 2, 4 get segments for
1, 2 and 4), and a SNOMED CT property type where the name is a known structure.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl.data.io import atomic_path, read_json
from medssl.errors import DataError

__all__ = ["SegmentLabel", "bundle_segments", "label_map_to_frames", "write_dicom_seg"]

# Label names (lower case) of medssl bundles -> (category, property type) as pydicom's SCT code names.
_SNOMED = {
    "vessel": ("AnatomicalStructure", "BloodVessel"),
    "blood vessel": ("AnatomicalStructure", "BloodVessel"),
    "necrotic / non-enhancing tumour core": ("MorphologicallyAbnormalStructure", "Necrosis"),
    "peritumoral edema": ("MorphologicallyAbnormalStructure", "Edema"),
    "enhancing tumour": ("MorphologicallyAbnormalStructure", "Neoplasm"),
}
_FALLBACK = ("Tissue", "Tissue")


@dataclass(frozen=True)
class SegmentLabel:
    """One segment: the value it has in the bundle's label map and its name."""

    value: int
    name: str

    @property
    def snomed(self) -> tuple[str, str]:
        """(category, property type): names of pydicom's ``codes.SCT`` entries."""
        return _SNOMED.get(self.name.strip().lower(), _FALLBACK)


def bundle_segments(bundle: str | os.PathLike, postprocessing: Any) -> list[SegmentLabel]:
    """The foreground segments of a bundle, from its metadata and post-processing.

    Each output channel ``k`` is given a logit map that favours it alone; the value the post-processing turns that
    into is the segment's label value (1 for a sigmoid-thresholded binary output; the convention's value for an
    argmax output). Channel 0 of a multi-channel output is the background.

    Raises:
        DataError: the bundle's metadata.json lacks ``network_data_format.outputs.pred.channel_def``.
    """
    meta_path = Path(bundle) / "configs" / "metadata.json"
    meta = read_json(meta_path)
    try:
        pred = meta["network_data_format"]["outputs"]["pred"]
        names = {int(k): str(v) for k, v in pred["channel_def"].items()}
        spatial_dims = len(pred.get("spatial_shape", [0, 0, 0]))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(meta_path, "no network_data_format.outputs.pred.channel_def to name the segments") from None
    channels = max(names) + 1
    shape = (channels,) + (1,) * spatial_dims
    labels = []
    for k in range(0 if channels == 1 else 1, channels):
        logits = torch.full(shape, -10.0)
        logits[k] = 10.0
        value = int(torch.as_tensor(postprocessing(logits)).flatten()[0].item())
        labels.append(SegmentLabel(value=value, name=names.get(k, f"class {k}")))
    return labels


def label_map_to_frames(label_map: np.ndarray, labels: list[SegmentLabel]) -> np.ndarray:
    """A label map indexed (column, row, slice) as (slice, row, column) frames of segment numbers 1..N.

    Raises:
        ValueError: the label map holds a value that is no segment's.
    """
    label_map = np.asarray(label_map)
    frames = np.zeros(label_map.shape[::-1], dtype=np.uint8)
    transposed = np.transpose(label_map, (2, 1, 0))
    known = {0} | {s.value for s in labels}
    unknown = sorted(set(np.unique(transposed).tolist()) - known)
    if unknown:
        raise ValueError(f"the prediction holds label values {unknown} that no segment of the bundle names")
    for number, segment in enumerate(labels, start=1):
        frames[transposed == segment.value] = number
    return frames


def write_dicom_seg(
    label_map: np.ndarray,
    source_datasets: list[Any],
    labels: list[SegmentLabel],
    path: str | os.PathLike,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "medssl segmentation",
) -> Path:
    """Write a binary DICOM SEG referencing ``source_datasets`` (the slices, in the order of the label map's last axis).

    Every slice gets a frame for every segment, empty ones included, so the SEG has as many frames per segment as
    the source series has slices. The file is written atomically.

    Args:
        label_map: integer array indexed (column, row, slice) on the source grid.
        source_datasets: the source series' pydicom datasets, sorted as the label map's slices.
        labels: the segments (label value and name).
        path: the output file.
        algorithm_name: e.g. the bundle's name.
        algorithm_version: e.g. the bundle's version.
        series_description: SeriesDescription of the new series.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = label_map_to_frames(label_map, labels)
    source_datasets = [_clean_source(ds) for ds in source_datasets]
    rows, cols = int(source_datasets[0].Rows), int(source_datasets[0].Columns)
    if frames.shape != (len(source_datasets), rows, cols):
        raise ValueError(
            f"label map of shape {tuple(np.asarray(label_map).shape)} does not fit the {len(source_datasets)} "
            f"slices of {cols} x {rows} pixels of the source series"
        )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, segment in enumerate(labels, start=1):
        category, prop = segment.snomed
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=segment.name[:64],
                segmented_property_category=getattr(codes.SCT, category),
                segmented_property_type=getattr(codes.SCT, prop),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    with warnings.catch_warnings():
        # single-component patient names of anonymised data are valid DICOM; highdicom only doubts them
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, source_datasets, frames, descriptions, algorithm_name, series_description)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


def _clean_source(ds: Any) -> Any:
    """A copy of a source slice that highdicom accepts: an empty SpecificCharacterSet means the default one."""
    if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
        ds = copy.deepcopy(ds)
        del ds.SpecificCharacterSet
    return ds


def _segmentation(
    hd: Any, source_datasets: list[Any], frames: np.ndarray, descriptions: list[Any], algorithm_name: str,
    series_description: str,
) -> Any:
    from medssl import __version__

    return hd.seg.Segmentation(
        source_images=source_datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(source_datasets[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medssl",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"medssl {__version__}",
        device_serial_number="0",
        series_description=series_description[:64],
        omit_empty_frames=False,
    )
