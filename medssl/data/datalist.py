"""MONAI decathlon-style datalists: loading with validation, case ids, and saving with portable paths.

A datalist is a JSON object whose lists (``training``, ``unlabeled``, ``validation``, ``testing``) hold entries
``{"image": path or [paths], "label": path, "case_id": str}``. Relative paths are relative to the datalist's folder,
as MONAI's :func:`monai.data.load_decathlon_datalist` reads them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from medssl.data.io import read_json, write_json
from medssl.errors import DatalistError

__all__ = ["LIST_KEYS", "load_datalist", "save_datalist", "case_id", "entry_files", "require_unlabeled"]

LIST_KEYS = ("training", "unlabeled", "validation", "testing")
_PATH_KEYS = ("image", "label", "pseudo_label")


def case_id(entry: dict[str, Any]) -> str:
    """The case id of a datalist entry: its ``case_id``, else the image file name without its suffixes."""
    if "case_id" in entry:
        return str(entry["case_id"])
    image = entry.get("image")
    first = image[0] if isinstance(image, (list, tuple)) else image
    if first is None:
        raise DatalistError("<datalist>", f"entry {entry!r} has no image")
    name = Path(str(first)).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def entry_files(entry: dict[str, Any]) -> list[str]:
    """Every file an entry names (image modalities and label)."""
    files: list[str] = []
    for key in _PATH_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        files.extend(str(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return files


def _map_paths(entry: dict[str, Any], fn) -> dict[str, Any]:
    out = dict(entry)
    for key in _PATH_KEYS:
        value = out.get(key)
        if isinstance(value, (list, tuple)):
            out[key] = [fn(str(v)) for v in value]
        elif value is not None:
            out[key] = fn(str(value))
    return out


def load_datalist(
    path: str | os.PathLike, check_files: bool = True, require: Sequence[str] = ("training", "unlabeled")
) -> dict[str, Any]:
    """Read a datalist and return it with every path made absolute.

    Args:
        path: the datalist JSON file.
        check_files: raise if an entry names a file that does not exist.
        require: lists of which at least one must name a case (training reads ``training`` or ``unlabeled``;
            inference may read a datalist of ``testing`` cases alone).

    Raises:
        DataError: the file is missing or is not JSON.
        DatalistError: a list is not a list of objects, an entry has no image, a training entry has no label,
            a case id appears twice, (with ``check_files``) a named file is missing, or no list of ``require``
            names a case.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatalistError(path, "a datalist must be a JSON object with 'training' and other lists")
    base = path.resolve().parent
    out = dict(data)
    seen: dict[str, str] = {}
    for key in LIST_KEYS:
        if key not in data:
            continue
        entries = data[key]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DatalistError(path, f"'{key}' must be a list of objects")
        resolved = []
        for i, entry in enumerate(entries):
            if "image" not in entry:
                raise DatalistError(path, f"'{key}' entry {i} has no 'image'")
            if key in ("training", "validation") and "label" not in entry:
                raise DatalistError(path, f"'{key}' entry {i} ({case_id(entry)}) has no 'label'")
            entry = _map_paths(entry, lambda p: str(p if os.path.isabs(p) else base / p))
            cid = case_id(entry)
            # 2D slice datalists carry several entries per case: a case id then repeats with different slices.
            uid = f"{cid}#{entry['slice']}" if "slice" in entry else cid
            if uid in seen:
                raise DatalistError(path, f"case '{uid}' appears twice (in '{seen[uid]}' and '{key}')")
            seen[uid] = key
            if check_files:
                for f in entry_files(entry):
                    if not os.path.exists(f):
                        raise DatalistError(path, f"'{key}' case '{cid}' names a missing file {f}")
            resolved.append(entry)
        out[key] = resolved
    if not any(out.get(key) for key in require):
        raise DatalistError(path, f"datalist names no case in {' or '.join(repr(k) for k in require)}")
    return out


def save_datalist(datalist: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``datalist`` atomically, with paths under the output folder made relative to it."""
    path = Path(path)
    base = path.resolve().parent

    def rel(p: str) -> str:
        p_abs = Path(p) if os.path.isabs(p) else Path(p).resolve()
        try:
            return str(p_abs.relative_to(base))
        except ValueError:
            return str(p_abs)

    out = copy.deepcopy(datalist)
    for key in LIST_KEYS:
        if key in out:
            out[key] = [_map_paths(e, rel) for e in out[key]]
    return write_json(out, path)


def require_unlabeled(datalist: dict[str, Any], source: str | os.PathLike = "<datalist>") -> list[dict[str, Any]]:
    """Return the ``unlabeled`` list, raising :class:`DatalistError` when it is absent or empty.

    Semi-supervised methods need unlabelled cases; an empty set would silently reduce them to supervised training.
    """
    unlabeled = datalist.get("unlabeled") or []
    if not unlabeled:
        raise DatalistError(
            source, "the unlabelled set is empty or absent: a semi-supervised method needs 'unlabeled' cases"
        )
    return unlabeled
