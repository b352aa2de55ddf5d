"""Reading and writing volumes and JSON with clear errors and atomic writes.

Volumes are returned in one convention whatever the file format: a numpy array indexed (x, y, z[, ...]) and a 4x4
affine to RAS+ world coordinates, as nibabel gives them. NIfTI goes through nibabel; MHA, NRRD and DICOM series
folders go through SimpleITK (whose LPS geometry is converted). Every write goes to a temporary name in the target
folder first and is renamed into place, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medssl.errors import DataError

__all__ = [
    "Volume",
    "atomic_path",
    "exclusive",
    "write_json",
    "read_json",
    "read_volume",
    "write_nifti",
    "is_nifti",
    "sitk_to_volume",
]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def _full_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".tar.gz"):
        if name.endswith(suffix):
            return suffix
    return path.suffix


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the suffix of ``path`` so that writers which choose the format by suffix still work.
    The file gets the ordinary mode of a new file (``0o666`` less the process's umask; ``mkstemp`` makes it
    ``0o600``), so checkpoints and outputs are readable as any other file the user writes.

    >>> with atomic_path("out/seg.nii.gz") as tmp:  # doctest: +SKIP
    ...     nib.save(img, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_full_suffix(path)}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if absent) while the block runs.

    Two processes that prepare the same output folder (two ``medssl bench accuracy`` runs started together, say)
    take turns: the second waits, then finds the first one's output. The lock is ``fcntl.flock``, released by the
    system if the holder dies; where ``fcntl`` is absent (Windows) the block runs unlocked.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`DataError` naming the file when it is absent or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


@dataclass
class Volume:
    """An image as a numpy array indexed (x, y, z[, c]) with its 4x4 RAS+ affine and the file it came from."""

    array: np.ndarray
    affine: np.ndarray
    path: str

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel spacing along each spatial axis, from the affine's column norms."""
        ndim = min(self.array.ndim, 3)
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :ndim], axis=0))


def sitk_to_volume(image: Any, path: str) -> Volume:
    """Convert a SimpleITK image (LPS geometry, array in z, y, x order) to a :class:`Volume`."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    ndim = image.GetDimension()
    # SimpleITK puts the vector components last and spatial axes reversed.
    spatial = arr.ndim if image.GetNumberOfComponentsPerPixel() == 1 else arr.ndim - 1
    arr = np.transpose(arr, list(reversed(range(spatial))) + list(range(spatial, arr.ndim)))
    direction = np.array(image.GetDirection(), dtype=float).reshape(ndim, ndim)
    spacing = np.array(image.GetSpacing(), dtype=float)
    origin = np.array(image.GetOrigin(), dtype=float)
    affine = np.eye(4)
    affine[:ndim, :ndim] = direction * spacing[None, :]
    affine[:ndim, 3] = origin
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return Volume(array=arr, affine=lps_to_ras @ affine, path=path)


# Files that GDCM cannot parse are silently left out of a series; these marks say such a file was meant as DICOM.
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Relative spread of slice gaps tolerated before a series counts as having missing or duplicate slices.
_SLICE_GAP_RTOL = 1e-2


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_no_skipped_files(folder: Path, series_files: list[str]) -> None:
    """Raise if a file of ``folder`` that looks like DICOM was left out of the series (unreadable to GDCM)."""
    used = {Path(f).resolve() for f in series_files}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR" or not path.is_file():
            continue
        if path.resolve() not in used and _looks_like_dicom(path):
            empty = path.stat().st_size == 0
            problem = "file is empty (0 bytes)" if empty else "DICOM file cannot be read (truncated or damaged?)"
            raise DataError(path, f"{problem}; it would be left out of the series in {folder}")


def _check_even_slices(folder: Path, reader: Any, image: Any) -> None:
    """Raise if the slice positions of a series are unevenly spaced (missing or duplicate slices).

    ITK only prints a warning and spreads the slices evenly between the first and the last, which puts every slice
    after a gap at the wrong place.
    """
    n = image.GetSize()[2] if image.GetDimension() == 3 else 1
    key = "0020|0032"  # ImagePositionPatient
    if n < 3 or not all(reader.HasMetaDataKey(i, key) for i in range(n)):
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, key).split("\\")] for i in range(n)])
    except ValueError:
        return
    normal = np.array(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    gaps = np.abs(np.diff(positions @ normal))
    typical = float(np.median(gaps))
    if typical == 0.0 or np.abs(gaps - typical).max() > _SLICE_GAP_RTOL * typical:
        raise DataError(
            folder,
            f"DICOM slices are unevenly spaced (gaps {float(gaps.min()):.4g} to {float(gaps.max()):.4g} mm along the"
            " slice normal): missing or duplicate slices",
        )


def _read_dicom_series(folder: Path) -> Any:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(folder, "folder holds no DICOM series")
    if len(series) > 1:
        raise DataError(folder, f"folder holds {len(series)} DICOM series ({', '.join(series)}); give one per folder")
    files = list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    _check_no_skipped_files(folder, files)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _check_even_slices(folder, reader, image)
    return image


def read_volume(path: str | os.PathLike, dtype: Any = None) -> Volume:
    """Read a NIfTI, MHA, NRRD (or any SimpleITK format) file, or a DICOM series folder, as a :class:`Volume`.

    Args:
        path: a file, or a folder holding exactly one DICOM series.
        dtype: cast the array to this numpy dtype (default: keep the stored type).

    Raises:
        DataError: the path does not exist, or the file cannot be read (truncated, empty, broken header).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        if path.is_dir():
            vol = sitk_to_volume(_read_dicom_series(path), str(path))
        elif is_nifti(path):
            img = nib.load(str(path))
            vol = Volume(array=np.asanyarray(img.dataobj), affine=np.asarray(img.affine, dtype=float), path=str(path))
        else:
            import SimpleITK as sitk

            vol = sitk_to_volume(sitk.ReadImage(str(path)), str(path))
    except DataError:
        raise
    except Exception as e:  # nibabel, gzip, zlib and ITK raise many types for a damaged file
        raise DataError(path, f"cannot be read as an image ({type(e).__name__}: {e})") from None
    if dtype is not None:
        vol.array = vol.array.astype(dtype, copy=False)
    return vol


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: Any = None) -> Path:
    """Write ``array`` (indexed x, y, z[, c]) with ``affine`` as NIfTI at ``path`` atomically; return the path."""
    arr = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float))
    img.header.set_data_dtype(arr.dtype)
    img.set_qform(np.asarray(affine, dtype=float), code=1)
    img.set_sform(np.asarray(affine, dtype=float), code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
