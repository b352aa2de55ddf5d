"""The MONAI Deploy application: DICOM series in, the bundle's segmentation out as DICOM SEG and NIfTI.

Operators (MONAI Deploy App SDK 4.x, Holoscan underneath)::

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
         -> BundleSegmentationOperator (medssl) -> SegmentationWriterOperator (medssl, highdicom)

The SDK's loader, selector and volume operators are used as they are; the selector gets a rule that names the one
series :func:`medssl.deploy.run.run_deploy` chose (with clear errors) before the graph starts. Inference is medssl's
own operator because a medssl bundle's inference needs medssl's loader (``load_bundle_inference``: config overrides,
safe checkpoint loading, the bundle's own invertible pre-processing), which ``MonaiBundleInferenceOperator`` does not
do; the writer is medssl's to write atomically, name segments from the bundle and keep every frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, Fragment, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator

from medssl.data.io import write_nifti
from medssl.deploy.infer import predict_volume
from medssl.deploy.seg import SegmentLabel, write_dicom_seg
from medssl.deploy.series import series_affine, sort_slices
from medssl.workflows.bundle import BundleInference

__all__ = ["BundleSegmentationOperator", "SegmentationWriterOperator", "SegmentationApp", "selection_rules"]

logger = logging.getLogger("medssl.deploy")


def selection_rules(series_uid: str, modality: str | None) -> str:
    """The SDK selector's JSON rules that match exactly one series."""
    conditions: dict[str, Any] = {"SeriesInstanceUID": f"^{series_uid}$".replace(".", r"\.")}
    if modality:
        conditions["Modality"] = f"(?i)^{modality}$"
    return json.dumps({"selections": [{"name": "medssl input", "conditions": conditions}]})


def _selected_series(study_selected_series_list: list[Any]) -> Any:
    if not study_selected_series_list or not study_selected_series_list[0].selected_series:
        raise RuntimeError("no DICOM series was selected")
    return study_selected_series_list[0].selected_series[0].series


class BundleSegmentationOperator(Operator):
    """Runs a medssl bundle on the selected series' volume.

    Named inputs:
        image: the SDK ``Image`` of the series (array indexed slice, row, column).
        study_selected_series_list: the selection, for the slices' geometry.

    Named output:
        segmentation: dict with ``label_map`` (column, row, slice), ``affine`` (RAS), ``datasets`` (sorted slices)
        and ``series_uid``.
    """

    def __init__(self, fragment: Fragment, *args: Any, inference: BundleInference, workdir: Path, **kwargs: Any):
        self.inference = inference
        self.workdir = Path(workdir)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input("study_selected_series_list")
        spec.output("segmentation")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("image")
        series = _selected_series(op_input.receive("study_selected_series_list"))
        datasets = sort_slices([s.get_native_sop_instance() for s in series.get_sop_instances()])
        volume = np.transpose(image.asnumpy(), (2, 1, 0))  # slice, row, column -> column (x), row (y), slice (z)
        if volume.shape[2] != len(datasets):
            raise RuntimeError(f"the volume has {volume.shape[2]} slices but the series {len(datasets)} instances")
        affine = series_affine(datasets, series.SeriesInstanceUID)
        label_map = predict_volume(self.inference, volume.astype(np.float32), affine, workdir=self.workdir)
        op_output.emit(
            {"label_map": label_map, "affine": affine, "datasets": datasets, "series_uid": str(series.SeriesInstanceUID)},
            "segmentation",
        )


class SegmentationWriterOperator(Operator):
    """Writes ``<series uid>_seg.dcm`` (DICOM SEG, highdicom) and ``<series uid>_seg.nii.gz`` into ``output_folder``.

    Named input:
        segmentation: as :class:`BundleSegmentationOperator` emits it.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: Path,
        labels: list[SegmentLabel],
        algorithm_name: str,
        algorithm_version: str,
        **kwargs: Any,
    ):
        self.output_folder = Path(output_folder)
        self.labels = labels
        self.algorithm_name = algorithm_name
        self.algorithm_version = algorithm_version
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("segmentation")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        seg = op_input.receive("segmentation")
        stem = self.output_folder / f"{seg['series_uid']}_seg"
        dcm = write_dicom_seg(
            seg["label_map"],
            seg["datasets"],
            self.labels,
            f"{stem}.dcm",
            self.algorithm_name,
            self.algorithm_version,
            series_description=f"{self.algorithm_name} segmentation",
        )
        nii = write_nifti(seg["label_map"], seg["affine"], f"{stem}.nii.gz", dtype=np.uint8)
        self.written += [dcm, nii]
        logger.info(f"wrote {dcm} and {nii}")


class SegmentationApp(Application):
    """DICOM series -> medssl bundle -> DICOM SEG + NIfTI, as a MONAI Deploy application.

    Args:
        input_folder: the DICOM folder.
        output_folder: where the writer puts its files.
        inference: the loaded bundle.
        labels: the bundle's segments.
        series_uid: the series to segment (chosen beforehand).
        modality: the modality the bundle expects.
        algorithm_name, algorithm_version: recorded in the SEG.
        workdir: scratch folder.
    """

    def __init__(
        self,
        *,
        input_folder: Path,
        output_folder: Path,
        inference: BundleInference,
        labels: list[SegmentLabel],
        series_uid: str,
        modality: str | None,
        algorithm_name: str,
        algorithm_version: str,
        workdir: Path,
    ):
        self.input_folder = Path(input_folder)
        self.output_folder = Path(output_folder)
        self.inference = inference
        self.labels = labels
        self.series_uid = series_uid
        self.modality = modality
        self.algorithm_name = algorithm_name
        self.algorithm_version = algorithm_version
        self.workdir = Path(workdir)
        self.writer: SegmentationWriterOperator | None = None
        super().__init__()

    def compose(self) -> None:
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=self.input_folder, name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(
            self, rules=selection_rules(self.series_uid, self.modality), name="series_selector"
        )
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        infer = BundleSegmentationOperator(self, inference=self.inference, workdir=self.workdir, name="bundle_inference")
        self.writer = SegmentationWriterOperator(
            self,
            output_folder=self.output_folder,
            labels=self.labels,
            algorithm_name=self.algorithm_name,
            algorithm_version=self.algorithm_version,
            name="seg_writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, infer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, infer, {("image", "image")})
        self.add_flow(infer, self.writer, {("segmentation", "segmentation")})
