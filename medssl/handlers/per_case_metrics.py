"""Per-case metric tables: MONAI's ``MetricsSaver`` with one CSV row per case, named channels, atomic writes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import ignite.distributed as idist
import pandas as pd
import torch
from ignite.engine import Engine
from monai.handlers import MetricsSaver
from monai.utils import string_list_all_gather

from medssl.data.io import atomic_path

__all__ = ["PerCaseMetricsWriter"]

_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def _case_name(name: object) -> str:
    if isinstance(name, (list, tuple)):
        name = name[0] if name else ""
    name = Path(str(name)).name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_meta(batch: object) -> list[dict]:
    """Each case's image meta data, named by the datalist's ``case_id`` where the case has one (a 3D BraTS case is
    four modality files: its first file's name is not the case's)."""
    items = batch if isinstance(batch, list) else [batch]
    metas = []
    for item in items:
        meta = dict(getattr(item["image"], "meta", None) or item.get("image_meta_dict") or {})
        if isinstance(item.get("case_id"), str):
            meta["filename_or_obj"] = item["case_id"]
        metas.append(meta)
    return metas


class PerCaseMetricsWriter(MetricsSaver):
    """Write ``engine.state.metric_details`` as one table when an evaluation ends.

    MONAI's ``MetricsSaver`` collects each case's file name (and gathers them across processes); its files are one
    ``<metric>_raw.csv`` per metric with channels ``class0..n``. This writes instead ``<prefix>per_case.csv``: one row
    per case (``case``: the case id of the datalist entry, else the file name without its suffix) and a column
    ``<metric>_<channel name>`` per metric and channel, with ``<metric>`` itself, the case's mean over the channels,
    where there are several (each figure under one name: a per-class metric the evaluator also keeps, e.g.
    ``val_dice_LV``, saves no details of its own), and ``<prefix>summary.csv`` (mean, std, median, min, max of
    every column, NaNs skipped), both atomically (a crash leaves the previous tables, never half of one).

    Args:
        output_dir: folder of the CSV files.
        channel_names: names of the metric channels (e.g. ``["WT", "TC", "ET"]`` or ``["RV", "Myo", "LV"]``).
        prefix: file-name prefix.
    """

    def __init__(self, output_dir: str | os.PathLike, channel_names: Sequence[str] = ("foreground",), prefix: str = "") -> None:
        super().__init__(str(output_dir), metrics=None, metric_details="*", batch_transform=_image_meta)
        self.output_dir = Path(output_dir)
        self.channel_names = list(channel_names)
        self.prefix = prefix

    def table(self, engine: Engine) -> pd.DataFrame:
        """The per-case table of the last evaluation."""
        names = string_list_all_gather(self._filenames) if idist.get_world_size() > 1 else self._filenames
        cases = [_case_name(n) for n in names]
        columns: dict[str, list] = {"case": cases}
        for metric, details in sorted((engine.state.metric_details or {}).items()):
            values = torch.as_tensor(details).detach().cpu().float()
            values = values.reshape(values.shape[0], -1)
            channels = self.channel_names if values.shape[1] == len(self.channel_names) else range(values.shape[1])
            for c, name in enumerate(channels):
                columns[f"{metric}_{name}"] = values[: len(cases), c].tolist()
            if values.shape[1] > 1:  # the case's mean over its channels (a channel absent from a case skipped)
                columns[metric] = torch.nanmean(values[: len(cases)], dim=1).tolist()
        return pd.DataFrame(columns)

    def __call__(self, engine: Engine) -> None:
        df = self.table(engine)
        if idist.get_rank() != self.save_rank:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.output_dir / f"{self.prefix}per_case.csv") as tmp:
            df.to_csv(tmp, index=False)
        summary = df.drop(columns="case").agg(["mean", "std", "median", "min", "max"]).T.rename_axis("metric")
        with atomic_path(self.output_dir / f"{self.prefix}summary.csv") as tmp:
            summary.to_csv(tmp)
