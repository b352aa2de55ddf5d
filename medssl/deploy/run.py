"""``medssl deploy run``: one trained bundle, one input folder, one output folder.

DICOM input runs the MONAI Deploy application (:mod:`medssl.deploy.app`); NIfTI input (a ``.nii``/``.nii.gz`` file
or a folder of them) runs the bundle's own NIfTI pipeline. Input is checked before anything is written; outputs are
written into a hidden folder inside the output folder and moved into place only when all of them are complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medssl.data.io import is_nifti, read_json
from medssl.errors import DataError

__all__ = ["run_deploy", "bundle_modality"]


def bundle_modality(metadata: dict[str, Any]) -> tuple[str | None, int]:
    """(modality, number of input channels) of a bundle's image input, from its metadata."""
    image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    modality = image.get("modality")
    return (str(modality).upper() if modality else None), int(image.get("num_channels", 1))


def _nifti_inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if is_nifti(path) else []
    return sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p)) if path.is_dir() else []


def _move_into(staging: Path, output: Path) -> list[Path]:
    moved = []
    for f in sorted(staging.iterdir()):
        if f.is_file():
            os.replace(f, output / f.name)
            moved.append(output / f.name)
    return moved


def run_deploy(
    bundle: str | os.PathLike,
    input: str | os.PathLike,
    output: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | None = None,
    series_uid: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Path]:
    """Segment ``input`` with the trained ``bundle``; return the files written into ``output``.

    Args:
        bundle: a medssl bundle folder (``configs/inference.json``, ``configs/metadata.json``).
        input: a DICOM folder (one series of the bundle's modality, or name one with ``series_uid``), a NIfTI file,
            or a folder of NIfTI files.
        output: the output folder: ``<SeriesInstanceUID>_seg.dcm`` + ``.nii.gz`` for DICOM, ``<case>_seg.nii.gz``
            for NIfTI.
        checkpoint: weights (default: ``bundle/models/model_best.pt``).
        device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
        series_uid: the SeriesInstanceUID to segment when the folder holds several candidates.
        overrides: inference.json overrides, e.g. ``{"roi_size": [64, 64, 64]}``.

    Raises:
        DataError: bad bundle, missing or unfit weights, no DICOM, a damaged file, no or several matching series.
    """
    from medssl.deploy import require_sdk
    from medssl.deploy.seg import bundle_segments
    from medssl.workflows.bundle import load_bundle_inference
    from medssl.inference.predict import predict_to_files

    bundle, input, output = Path(bundle), Path(input), Path(output)
    metadata = read_json(bundle / "configs" / "metadata.json")
    modality, channels = bundle_modality(metadata)
    if not input.exists():
        raise DataError(input, "input not found")
    niftis = _nifti_inputs(input)
    infos = None
    if not niftis:
        require_sdk()
        from medssl.deploy.series import choose_series, scan_dicom_folder

        chosen = choose_series(scan_dicom_folder(input), input, modality=modality, series_uid=series_uid)
        if channels != 1:
            raise DataError(
                bundle, f"the bundle takes {channels} input channels; DICOM input feeds one series: give NIfTI input"
            )
        infos = chosen
    inference = load_bundle_inference(bundle, checkpoint=checkpoint, device=device, overrides=overrides)
    labels = bundle_segments(bundle, inference.postprocessing)

    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".medssl-deploy-", dir=output))
    try:
        if niftis:
            predict_to_files(
                inference.network,
                [{"image": str(p)} for p in niftis],
                inference.preprocessing,
                inference.inferer,
                inference.postprocessing,
                staging,
                inference.device,
            )
        else:
            from medssl.deploy.app import SegmentationApp
            from medssl.deploy.series import stage_series

            series_dir = stage_series(infos, Path(tempfile.mkdtemp(prefix="series-", dir=staging)))
            app = SegmentationApp(
                input_folder=series_dir,
                output_folder=staging,
                inference=inference,
                labels=labels,
                series_uid=infos.uid,
                modality=modality,
                algorithm_name=str(metadata.get("name", bundle.name)),
                algorithm_version=str(metadata.get("version", "0")),
                workdir=staging,
            )
            try:
                app.run()
            except DataError:
                raise
            except Exception as e:
                raise DataError(input, f"the application failed on this series ({type(e).__name__}: {e})") from e
            if not any(staging.glob("*_seg.dcm")):
                raise DataError(input, "the application wrote no segmentation (see the log above)")
        return _move_into(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
