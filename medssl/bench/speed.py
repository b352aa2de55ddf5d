"""Speed benchmark: what semi-supervised training and medssl's inference cost, measured side by side, as ratios.

Five phases, each in its own fresh process so that each gets its own peak memory:

- ``train``: one training iteration of each semi-supervised method against the supervised iteration with the same
  number of images in the batch, with the lung-vessel bundle's network (:mod:`medssl.bench.speed_train`);
- ``train_la``: the same at the LA track's CPU protocol (its UNet without residual units, instance norm, 64 x 64 x 32
  patches, 4 labelled + 4 unlabelled), the cost of each method in the runs of ``medssl bench accuracy --track la``;
- ``validate_la``: one validation pass of those runs (8 volumes of LA's size, zoomed to half resolution, sliding
  window, Dice), set beside the training iterations between two passes;
- ``infer_ct``: sliding-window inference on a 1x256x256x200 CT-sized volume with the lung-vessel bundle's UNet;
- ``infer_brats``: the same on a 4x240x240x155 BraTS volume with the 3D TransBTS bundle's network.

Inference compares plain MONAI sliding-window inference with medssl's inference path on the same network and
volume (:mod:`medssl.bench.speed_infer`); the measuring tools are in :mod:`medssl.bench.measure`, the report and its
targets in :mod:`medssl.bench.speed_report`.

Absolute times on a shared machine drift by tens of percent, so measurements alternate (A, B, A, B, ... with the
order swapped each round) and the report gives medians and per-round ratios.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from medssl.bench.measure import machine_info, matmul_gflops, max_rss_bytes, mib
from medssl.workflows.sizes import BRATS_ROI, LA_CPU, LUNG_ROI, brats_network, la_network, lung_network
from medssl.bench.speed_infer import bench_inference, bench_validation
from medssl.bench.speed_report import targets, write_report
from medssl.bench.speed_train import bench_training
from medssl.data.io import read_json

__all__ = ["PHASES", "default_config", "config_from_args", "run_benchmark", "merge_reports", "run_speed"]

PHASES = ("train", "train_la", "validate_la", "infer_ct", "infer_brats")


def _phase(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in this process; return its results with this process's peak memory."""
    from medssl.device import resolve_device

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg["device"])
    baseline = max_rss_bytes()
    start = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if name == "train":
        result = bench_training(
            device, roi=cfg["train_roi"], n_labeled=cfg["n_labeled"], n_unlabeled=cfg["n_unlabeled"],
            repeats=cfg["train_repeats"], warmup=cfg.get("train_warmup", 2), robust_loss=cfg["robust_loss"],
        )
    elif name == "train_la":
        channels = cfg["la_channels"]
        result = bench_training(
            device, roi=cfg["la_roi"], n_labeled=cfg["la_n_labeled"], n_unlabeled=cfg["la_n_unlabeled"],
            repeats=cfg["train_repeats"], warmup=cfg.get("train_warmup", 2), robust_loss=cfg["robust_loss"],
            network_fn=lambda: la_network(channels), feature_channels=2 * channels[0],
            network_name="LA UNet, CPU protocol",
        )  # fmt: skip
    elif name == "validate_la":
        result = bench_validation(
            device, la_network(cfg["la_channels"]), cfg["la_shape"], cfg["la_roi"], scale=cfg["la_scale"],
            volumes=cfg["la_val_volumes"], sw_batch_size=cfg["la_sw_batch_size"], repeats=cfg["la_val_repeats"],
        )  # fmt: skip
        result["val_interval"] = cfg["la_val_interval"]
    elif name == "infer_ct":
        result = bench_inference(
            device, lung_network(), cfg["ct_shape"], cfg["ct_roi"], sw_batch_size=cfg["ct_sw_batch_size"],
            repeats=cfg["infer_repeats"], matmul_size=cfg.get("matmul_size", 2048),
            precision_check=cfg.get("precision_check", True),
        )
    elif name == "infer_brats":
        result = bench_inference(
            device, brats_network(cfg["brats_roi"]), cfg["brats_shape"], cfg["brats_roi"],
            sw_batch_size=cfg["brats_sw_batch_size"], repeats=cfg["brats_repeats"],
            matmul_size=cfg.get("matmul_size", 2048),
        )
    else:
        raise ValueError(f"phase must be one of {PHASES}, got '{name}'.")
    result["process_peak_rss_mib"] = mib(max_rss_bytes())
    result["rss_after_imports_mib"] = mib(baseline)
    result["phase_seconds"] = round(time.perf_counter() - start, 1)
    result["date"] = date
    return result


def _run_phase_isolated(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    # "spawn": a fresh interpreter, so ru_maxrss is this phase's own peak (a fork would inherit the parent's)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_phase, name, cfg).result()


def _la_config() -> dict[str, Any]:
    """The LA track's CPU protocol (medssl.bench.tracks "la"/"cpu") as this benchmark's settings: its patch, batch,
    zoom, sliding-window batch and validation interval; LA volumes are about 190 x 140 x 88 voxels, 8 of them
    validate."""
    from medssl.bench.tracks import TRACKS

    proto = TRACKS["la"].protocols["cpu"]
    o = proto.overrides
    return {
        "la_channels": list(LA_CPU.channels), "la_roi": list(o["roi_size"]), "la_n_labeled": o["batch_size"],
        "la_n_unlabeled": o["unlabeled_batch_size"], "la_shape": [1, 190, 140, 88], "la_scale": o["scale"],
        "la_val_volumes": 8, "la_sw_batch_size": o["sw_batch_size"], "la_val_repeats": 2,
        "la_val_interval": proto.val_interval,
    }  # fmt: skip


# instance norm needs more than one voxel at the UNet's bottom: 32^3 patches, 4 levels
_LA_QUICK = {
    "la_channels": [4, 8, 16, 32], "la_roi": [32, 32, 32], "la_n_labeled": 2, "la_n_unlabeled": 2,
    "la_shape": [1, 48, 40, 32], "la_scale": 0.5, "la_val_volumes": 2, "la_sw_batch_size": 4, "la_val_repeats": 1,
    "la_val_interval": 200,
}  # fmt: skip


def default_config(quick: bool = False) -> dict[str, Any]:
    """The benchmark's settings: the issue's sizes, or tiny ones with ``quick`` (for tests and smoke runs)."""
    if quick:
        return {
            "device": "auto", "threads": None, "phases": list(PHASES), "robust_loss": "gce",
            "train_roi": [32, 32, 32], "n_labeled": 2, "n_unlabeled": 2, "train_repeats": 1, "train_warmup": 1,
            "ct_shape": [1, 48, 48, 40], "ct_roi": [32, 32, 32], "ct_sw_batch_size": 4, "infer_repeats": 1,
            "brats_shape": [4, 32, 32, 32], "brats_roi": [32, 32, 32], "brats_sw_batch_size": 2, "brats_repeats": 1,
            "matmul_size": 2048, **_LA_QUICK,
        }  # fmt: skip
    return {
        "device": "auto", "threads": None, "phases": list(PHASES), "robust_loss": "gce",
        "train_roi": list(LUNG_ROI), "n_labeled": 2, "n_unlabeled": 2, "train_repeats": 7, "train_warmup": 2,
        "ct_shape": [1, 256, 256, 200], "ct_roi": list(LUNG_ROI), "ct_sw_batch_size": 4, "infer_repeats": 2,
        "brats_shape": [4, 240, 240, 155], "brats_roi": list(BRATS_ROI), "brats_sw_batch_size": 2,
        "brats_repeats": 1, "matmul_size": 2048, **_la_config(),
    }  # fmt: skip


def run_benchmark(cfg: dict[str, Any], isolate: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the phases of ``cfg`` (each in a fresh process when ``isolate``) and return the report."""
    from medssl.device import resolve_device

    device = resolve_device(cfg["device"])
    report: dict[str, Any] = {"machine": machine_info(device), "config": cfg, "phases": {}}
    report["machine"]["matmul_gflops_fp32"] = round(matmul_gflops(device, cfg.get("matmul_size", 2048)), 1)
    for name in cfg["phases"]:
        log(f"speed benchmark: phase {name} ...")
        result = _run_phase_isolated(name, cfg) if isolate else _phase(name, cfg)
        report["phases"][name] = result
        log(f"speed benchmark: phase {name} done in {result['phase_seconds']} s")
    report["targets"] = targets(report)
    return report


def merge_reports(earlier: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the phases it did not run taken from ``earlier``, targets recomputed.

    Phases taken over are listed in ``kept_from_earlier`` with the date, settings and machine (CPU, fp32 matmul rate)
    of the run that measured them (for a phase ``earlier`` had itself kept, the run before it), so the report says
    which numbers are from which run and machine.
    """
    kept = {name: result for name, result in earlier.get("phases", {}).items() if name not in report["phases"]}
    if not kept:
        return report
    merged = dict(report)
    merged["phases"] = {name: {**kept, **report["phases"]}[name] for name in PHASES if name in {**kept, **report["phases"]}}
    machine = earlier.get("machine", {})
    origin = {
        "date": machine.get("date"),
        "config": earlier.get("config"),
        "cpu": machine.get("cpu"),
        "matmul_gflops_fp32": machine.get("matmul_gflops_fp32"),
    }
    merged["kept_from_earlier"] = {
        name: {
            **origin,
            "date": result.get("date", origin["date"]),
            **earlier.get("kept_from_earlier", {}).get(name, {}),  # kept twice: the first run's facts
        }
        for name, result in kept.items()
    }
    merged["targets"] = targets(merged)
    return merged


def config_from_args(args: Any) -> dict[str, Any]:
    """The benchmark settings of parsed command-line ``args`` (``medssl bench speed``): the defaults, or the quick
    ones with ``args.quick``, with the options given.

    Raises:
        ValueError: a number of repeats below 1.
    """
    cfg = default_config(quick=args.quick)
    cfg["device"] = args.device
    for key in ("phases", "threads", "train_repeats", "infer_repeats", "brats_repeats", "ct_shape", "brats_shape",
                "robust_loss"):  # fmt: skip
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key in ("train_repeats", "infer_repeats", "brats_repeats"):
        if cfg[key] < 1:
            raise ValueError(f"{key.replace('_', '-')} must be at least 1, got {cfg[key]}.")
    return cfg


def run_speed(
    cfg: dict[str, Any], out: str | os.PathLike, isolate: bool = True, update: bool = False
) -> tuple[dict[str, Any], Path, Path]:
    """Run the benchmark of ``cfg`` and write its report to ``out`` (progress goes to stderr).

    With ``update``, the phases not run now are kept from the report already in ``out`` (:func:`merge_reports`).

    Returns:
        the report, and the paths of ``speed.json`` and ``speed.md``.
    """
    report = run_benchmark(cfg, isolate=isolate, log=lambda s: print(s, file=sys.stderr, flush=True))
    earlier = Path(out) / "speed.json"
    if update and earlier.is_file():
        report = merge_reports(read_json(earlier), report)
    json_path, md_path = write_report(report, out)
    return report, json_path, md_path
