"""The volumes behind a 2D slice datalist: its slice entries grouped back into one entry per scan.

2D bundles train on slices, but a segmentation is judged per scan (BraTS scores each volume; the ACDC papers score
each volume): a false positive on a slice without tumour must count against that scan's Dice. Validation and test
entries of a slice datalist (``medssl prepare brats --slices2d``, ``medssl prepare ssl4mis``) carry ``case_id`` and
``slice``; :func:`stack_slices` turns them into one entry per case whose ``image`` and ``label`` list the slice files
in slice order, which :class:`~medssl.transforms.slices.StackSlicesd` loads as one volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medssl.data.datalist import case_id

__all__ = ["stack_slices", "STACK_KEY"]

#: Key of a stacked entry that lists its slice indices (and marks it as stacked).
STACK_KEY = "slices"


def stack_slices(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per case: slice entries of a case grouped in slice order; entries without ``slice`` unchanged.

    Slices left out of a case (``medssl prepare brats`` drops slices with little brain and no tumour) are absent
    from its stacked volume, so the volume's Dice is over the slices that were kept.

    >>> stack_slices([{"image": "b_z1.nii", "label": "l1", "case_id": "a", "slice": 1},
    ...               {"image": "b_z0.nii", "label": "l0", "case_id": "a", "slice": 0}])
    [{'image': ['b_z0.nii', 'b_z1.nii'], 'label': ['l0', 'l1'], 'case_id': 'a', 'slices': [0, 1]}]
    """
    stacked: dict[str, dict[str, Any]] = {}
    order: list[Any] = []
    for entry in entries:
        if "slice" not in entry:
            order.append(dict(entry))
            continue
        cid = case_id(entry)
        if cid not in stacked:
            stacked[cid] = {"case_id": cid, "_parts": []}
            order.append(cid)
        stacked[cid]["_parts"].append(entry)
    out = []
    for item in order:
        if isinstance(item, dict):
            out.append(item)
            continue
        parts = sorted(stacked[item]["_parts"], key=lambda e: int(e["slice"]))
        entry = {key: [p[key] for p in parts] for key in ("image", "label", "pseudo_label") if key in parts[0]}
        out.append({**entry, "case_id": item, STACK_KEY: [int(p["slice"]) for p in parts]})
    return out
