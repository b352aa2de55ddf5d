"""Speed benchmark: what semi-supervised training and medssl's inference cost, measured side by side, as ratios.

Three phases, each in its own fresh process so that each gets its own peak memory:

- ``train``: one training iteration of SegPL, Bayesian pseudo-labels and teacher-student (with a robust loss) on
  the real :class:`~medssl.engines.SemiSupervisedTrainer` and handlers, against the supervised iteration with the
  same number of images in the batch (labelled + unlabelled), with the lung-vessel bundle's network;
- ``infer_ct``: sliding-window inference on a 1x256x256x200 CT-sized volume with the lung-vessel bundle's UNet;
- ``infer_brats``: the same on a 4x240x240x155 BraTS volume with the 3D TransBTS bundle's network.

Inference compares plain ``monai.inferers.sliding_window_inference`` with its defaults (``sw_batch_size=1``,
under ``torch.no_grad``) with medssl's inference path (:func:`~medssl.inference.optimize.optimize_for_inference`,
:func:`~medssl.inference.predict.make_sliding_window_inferer`, ``torch.inference_mode``) on the same network and
volume: voxels per second, achieved GFLOP/s (FLOPs of one window batch counted with
``torch.utils.flop_counter.FlopCounterMode``, times the number of windows run) and that as a fraction of this
machine's fp32 matmul rate measured in the same process, plus the agreement of the two outputs.

Absolute times on a shared machine drift by tens of percent, so measurements alternate (A, B, A, B, ... with the
order swapped each round) and the report gives medians and per-round ratios.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medssl.data.io import atomic_path, read_json, write_json

__all__ = [
    "PHASES",
    "TRAIN_METHODS",
    "lung_network",
    "brats_network",
    "count_flops",
    "matmul_gflops",
    "machine_info",
    "bench_training",
    "bench_inference",
    "run_benchmark",
    "to_markdown",
    "merge_reports",
    "add_arguments",
    "run",
    "main",
]

PHASES = ("train", "infer_ct", "infer_brats")
TRAIN_METHODS = ("supervised", "segpl", "bpl", "teacher_student")
DEFAULT_OUT = "benchmarks/results/speed"
SSL_TARGET = 1.15
MATMUL_TARGET = 0.5

# The networks of the bundles (configs/train.json "network_def"); medssl never imports bundles/, and
# tests/bench/test_speed.py checks these against the bundles' configs.
LUNG_ROI = (96, 96, 96)
LUNG_FEATURE_LAYER, LUNG_FEATURE_CHANNELS = "model.1", 32
BRATS_ROI = (128, 128, 128)


def lung_network() -> nn.Module:
    """The lung-vessel CT bundle's network: MONAI UNet, 1 -> 1 channel, 16-256 channels, 2 residual units."""
    from monai.networks.nets import UNet

    return UNet(3, 1, 1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")


def brats_network(roi_size: Sequence[int] = BRATS_ROI) -> nn.Module:
    """The 3D BraTS bundle's network: TransBTS, 4 -> 4 channels, built for windows of ``roi_size``."""
    from medssl.networks import TransBTS

    return TransBTS(
        3, 4, 4, img_size=list(roi_size), channels=(16, 32, 64, 128), embed_dim=512, num_layers=4, num_heads=8,
        mlp_dim=4096,
    )


# ----------------------------------------------------------------------------------------------------------------
# measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward of ``module`` on ``inputs`` (convolutions and matrix products, 2 per multiply-add)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Median fp32 GFLOP/s of an ``n x n`` matrix product on ``device`` (after two warm-up products)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    for _ in range(2):
        a @ b
    times = [_timed(lambda: a @ b, device)[0] for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _PeakRSS:
    """Peak resident memory over a block, sampled every few milliseconds (``ru_maxrss`` only counts up)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak: int | None = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, library versions, GPU (if any) and the date."""
    import monai

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    return info


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------------------------------------------
# training


def _blob_labels(n: int, roi: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """Binary label maps with some structure (thresholded smooth noise, about 10% foreground)."""
    coarse = torch.randn(n, 1, *(max(2, r // 8) for r in roi), generator=gen)
    smooth = F.interpolate(coarse, size=tuple(roi), mode="trilinear", align_corners=False)
    return (smooth > 1.0).float()


def _train_batches(n_l: int, n_u: int, roi: Sequence[int], with_pseudo: bool, seed: int = 0) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    labels = _blob_labels(n_l, roi, gen)
    labelled = {"image": labels * 0.6 + 0.2 * torch.rand(n_l, 1, *roi, generator=gen), "label": labels}
    pseudo = _blob_labels(n_u, roi, gen)
    unlabelled = {"image": pseudo * 0.6 + 0.2 * torch.rand(n_u, 1, *roi, generator=gen)}
    if with_pseudo:
        unlabelled["pseudo_label"] = pseudo
    return labelled, unlabelled


def _build_trainer(method: str, network: nn.Module, device: torch.device, n_l: int, n_u: int, roi, robust_loss: str):
    from monai.losses import DiceCELoss

    from medssl.engines import SemiSupervisedTrainer
    from medssl.handlers.methods import ssl_handlers, unsupervised_loss
    from medssl.networks import ThresholdHead

    supervised = method == "supervised"
    labelled, unlabelled = _train_batches(
        n_l + n_u if supervised else n_l, n_u, roi, with_pseudo=method == "teacher_student"
    )
    head = None
    if method == "bpl":  # the lung bundle's head: per image, prior N(0.7, 0.15^2)
        head = ThresholdHead(3, in_channels=LUNG_FEATURE_CHANNELS, mode="per_image", init_mu=0.7, init_std=0.15)
    handlers = ssl_handlers(
        method, max_weight=1.0, warmup=0, ramp=0, unit="iterations", head=head, feature_layer=LUNG_FEATURE_LAYER,
        prior_mu=0.7, prior_std=0.15,
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-4, weight_decay=1e-5)
    trainer = SemiSupervisedTrainer(
        device=device,
        max_epochs=0,
        train_data_loader=[labelled],
        epoch_length=1,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True),
        unlabeled_data_loader=None if supervised else [unlabelled],
        unsup_loss_function=unsupervised_loss(method, robust_loss),
        train_handlers=handlers,
        amp=device.type == "cuda",
    )
    return trainer


def _one_iteration(trainer: Any) -> None:
    # epoch_length is 1: one more epoch is one more iteration, and the engine resumes where it stopped
    trainer.state.max_epochs += 1
    trainer.run()


def bench_training(
    device: torch.device,
    methods: Sequence[str] = TRAIN_METHODS,
    roi: Sequence[int] = LUNG_ROI,
    n_labeled: int = 2,
    n_unlabeled: int = 2,
    repeats: int = 5,
    warmup: int = 2,
    robust_loss: str = "gce",
    network_fn: Callable[[], nn.Module] = lung_network,
) -> dict[str, Any]:
    """Seconds per training iteration of each method, measured in interleaved rounds.

    The supervised iteration has ``n_labeled + n_unlabeled`` labelled images; the others ``n_labeled`` labelled and
    ``n_unlabeled`` unlabelled. Batches are made in memory (the data pipeline runs in loader workers, off this
    path). Each method trains its own copy of the same initial network.
    """
    if "supervised" not in methods:
        raise ValueError(f"methods must include 'supervised' (the reference), got {list(methods)}.")
    torch.manual_seed(0)
    base = network_fn().to(device)
    trainers = {
        m: _build_trainer(m, copy.deepcopy(base), device, n_labeled, n_unlabeled, roi, robust_loss) for m in methods
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        for trainer in trainers.values():
            _one_iteration(trainer)
    times: dict[str, list[float]] = {m: [] for m in methods}
    order = list(methods)
    for r in range(repeats):
        for m in order if r % 2 == 0 else reversed(order):
            times[m].append(_timed(lambda: _one_iteration(trainers[m]), device)[0])
    sup = times["supervised"]
    result: dict[str, Any] = {
        "roi": list(roi),
        "images_per_iteration": n_labeled + n_unlabeled,
        "n_labeled": n_labeled,
        "n_unlabeled": n_unlabeled,
        "robust_loss": robust_loss,
        "repeats": repeats,
        "methods": {},
    }
    for m in methods:
        ratios = [t / s for t, s in zip(times[m], sup)]
        result["methods"][m] = {
            "seconds": [round(t, 4) for t in times[m]],
            "median_s": round(_median(times[m]), 4),
            "ratio_to_supervised": round(_median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    if device.type == "cuda":
        result["cuda_max_memory_mib"] = _mib(torch.cuda.max_memory_allocated(device))
    return result


# ----------------------------------------------------------------------------------------------------------------
# inference


class _WindowCounter(nn.Module):
    """Pass-through wrapper that counts the windows a sliding-window inferer sends through ``network``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.windows = 0
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        self.batches += 1
        return self.network(x)


def _volume(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A smooth random volume (1, C, *spatial) in about [0, 1]: structure at several scales, like an image."""
    gen = torch.Generator().manual_seed(seed)
    c, spatial = shape[0], tuple(shape[1:])
    vol = torch.zeros(1, c, *spatial)
    for cells in (4, 16):
        coarse = torch.rand(1, c, *(max(2, s // cells) for s in spatial), generator=gen)
        vol += F.interpolate(coarse, size=spatial, mode="trilinear", align_corners=False)
    return vol / 2


def _segmentation(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, label map) of network output (1, C, *spatial): sigmoid > 0.5 for one channel, else argmax."""
    logits = logits.float()
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits)
        return prob, (prob > 0.5).long()
    prob = torch.softmax(logits, dim=1)
    return prob, prob.argmax(dim=1, keepdim=True)


def _agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    p_ref, s_ref = _segmentation(reference)
    p_oth, s_oth = _segmentation(other)
    n_classes = max(2, reference.shape[1])
    dice = compute_dice(one_hot(s_oth, n_classes), one_hot(s_ref, n_classes), include_background=False)
    dice_values = dice[~torch.isnan(dice)]
    return {
        "max_abs_prob_diff": float((p_ref - p_oth).abs().max()),
        "dice": float(dice_values.mean()) if dice_values.numel() else 1.0,
        "label_agreement": float((s_ref == s_oth).float().mean()),
    }


def bench_inference(
    device: torch.device,
    network: nn.Module,
    shape: Sequence[int],
    roi: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    repeats: int = 2,
    warmup: bool = True,
    matmul_size: int = 2048,
    precision_check: bool = False,
) -> dict[str, Any]:
    """Plain MONAI sliding-window inference against medssl's tuned path on one volume of ``shape`` (C, *spatial).

    Both use overlap ``overlap`` and constant blending (MONAI's defaults), so the outputs differ only by float
    rounding of the rewrites; the agreement is measured on the last round's outputs.
    """
    from monai.inferers import sliding_window_inference

    from medssl.inference.optimize import optimize_for_inference
    from medssl.inference.predict import make_sliding_window_inferer

    network = network.to(device).eval()
    tuned_net = optimize_for_inference(network)
    plain = _WindowCounter(network)
    tuned = _WindowCounter(tuned_net)
    image = _volume(shape).to(device)
    inferer = make_sliding_window_inferer(roi, device, sw_batch_size=sw_batch_size, overlap=overlap, mode="constant")

    window_batch = torch.zeros(sw_batch_size, shape[0], *roi, device=device)
    flops_per_window = count_flops(network, window_batch) / sw_batch_size

    def run_plain() -> torch.Tensor:
        with torch.no_grad():
            return sliding_window_inference(image, roi, 1, plain, overlap=overlap)

    def run_tuned() -> torch.Tensor:
        with torch.inference_mode():
            return inferer(image, tuned)

    if warmup:  # one window batch each: first-call allocations and kernel selection are not timed
        with torch.inference_mode():
            network(window_batch[:1])
            tuned_net(window_batch)
    runs = {"plain": run_plain, "tuned": run_tuned}
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[int]] = {k: [] for k in runs}
    matmul: list[float] = []
    outputs: dict[str, torch.Tensor] = {}
    for r in range(repeats):
        matmul.append(matmul_gflops(device, matmul_size))
        for name in ("plain", "tuned") if r % 2 == 0 else ("tuned", "plain"):
            outputs.pop(name, None)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with _PeakRSS() as rss:
                seconds, out = _timed(runs[name], device)
            outputs[name] = out.detach()
            times[name].append(seconds)
            if device.type == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated(device))
            elif rss.peak is not None:
                peaks[name].append(rss.peak)
    matmul.append(matmul_gflops(device, matmul_size))

    voxels = int(torch.tensor(shape[1:]).prod())
    mm_rate = _median(matmul)
    result: dict[str, Any] = {
        "shape": list(shape),
        "roi": list(roi),
        "overlap": overlap,
        "repeats": repeats,
        "flops_per_window": int(flops_per_window),
        "matmul_gflops": round(mm_rate, 1),
        "matmul_gflops_samples": [round(m, 1) for m in matmul],
        "memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "rss_peak",
    }
    for name, counter in (("plain", plain), ("tuned", tuned)):
        windows = counter.windows // repeats
        t = _median(times[name])
        gflops = flops_per_window * windows / t / 1e9
        result[name] = {
            "sw_batch_size": 1 if name == "plain" else sw_batch_size,
            "windows": windows,
            "seconds": [round(s, 3) for s in times[name]],
            "median_s": round(t, 3),
            "voxels_per_s": round(voxels / t),
            "gflops": round(gflops, 2),
            "fraction_of_matmul": round(gflops / mm_rate, 3),
            "peak_memory_mib": _mib(max(peaks[name])) if peaks[name] else None,
        }
    result["speedup"] = round(_median([p / q for p, q in zip(times["plain"], times["tuned"])]), 3)
    result["agreement"] = _agreement(outputs["plain"], outputs["tuned"])
    if precision_check:
        result["bf16"] = _bf16_check(tuned_net, window_batch, device)
    return result


def _bf16_check(network: nn.Module, window_batch: torch.Tensor, device: torch.device, repeats: int = 3) -> dict:
    """bf16 autocast against fp32 on one window batch: speed ratio (> 1: bf16 faster) and agreement."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(window_batch.shape, generator=gen).to(device)

    def fp32() -> torch.Tensor:
        with torch.inference_mode():
            return network(x)

    def bf16() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            return network(x)

    bf16()  # kernel selection for the new dtype is not timed
    ratios, outs = [], {}
    for _ in range(repeats):
        t32, outs["fp32"] = _timed(fp32, device)
        t16, outs["bf16"] = _timed(bf16, device)
        ratios.append(t32 / t16)
    agreement = _agreement(outs["fp32"].float(), outs["bf16"].float())
    return {"speed_vs_fp32": round(_median(ratios), 3), **agreement}


# ----------------------------------------------------------------------------------------------------------------
# phases, each in a fresh process


def _phase(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in this process; return its results with this process's peak memory."""
    from medssl.inference.predict import resolve_device

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg["device"])
    baseline = _max_rss_bytes()
    start = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if name == "train":
        result = bench_training(
            device, roi=cfg["train_roi"], n_labeled=cfg["n_labeled"], n_unlabeled=cfg["n_unlabeled"],
            repeats=cfg["train_repeats"], warmup=cfg.get("train_warmup", 2), robust_loss=cfg["robust_loss"],
        )
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
    result["process_peak_rss_mib"] = _mib(_max_rss_bytes())
    result["rss_after_imports_mib"] = _mib(baseline)
    result["phase_seconds"] = round(time.perf_counter() - start, 1)
    result["date"] = date
    return result


def _run_phase_isolated(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    # "spawn": a fresh interpreter, so ru_maxrss is this phase's own peak (a fork would inherit the parent's)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_phase, name, cfg).result()


def default_config(quick: bool = False) -> dict[str, Any]:
    """The benchmark's settings: the issue's sizes, or tiny ones with ``quick`` (for tests and smoke runs)."""
    if quick:
        return {
            "device": "auto", "threads": None, "phases": list(PHASES), "robust_loss": "gce",
            "train_roi": [32, 32, 32], "n_labeled": 2, "n_unlabeled": 2, "train_repeats": 1, "train_warmup": 1,
            "ct_shape": [1, 48, 48, 40], "ct_roi": [32, 32, 32], "ct_sw_batch_size": 4, "infer_repeats": 1,
            "brats_shape": [4, 32, 32, 32], "brats_roi": [32, 32, 32], "brats_sw_batch_size": 2, "brats_repeats": 1,
            "matmul_size": 2048,
        }  # fmt: skip
    return {
        "device": "auto", "threads": None, "phases": list(PHASES), "robust_loss": "gce",
        "train_roi": list(LUNG_ROI), "n_labeled": 2, "n_unlabeled": 2, "train_repeats": 7, "train_warmup": 2,
        "ct_shape": [1, 256, 256, 200], "ct_roi": list(LUNG_ROI), "ct_sw_batch_size": 4, "infer_repeats": 2,
        "brats_shape": [4, 240, 240, 155], "brats_roi": list(BRATS_ROI), "brats_sw_batch_size": 2,
        "brats_repeats": 1, "matmul_size": 2048,
    }  # fmt: skip


def run_benchmark(cfg: dict[str, Any], isolate: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the phases of ``cfg`` (each in a fresh process when ``isolate``) and return the report."""
    from medssl.inference.predict import resolve_device

    device = resolve_device(cfg["device"])
    report: dict[str, Any] = {"machine": machine_info(device), "config": cfg, "phases": {}}
    report["machine"]["matmul_gflops_fp32"] = round(matmul_gflops(device, cfg.get("matmul_size", 2048)), 1)
    for name in cfg["phases"]:
        log(f"speed benchmark: phase {name} ...")
        result = _run_phase_isolated(name, cfg) if isolate else _phase(name, cfg)
        report["phases"][name] = result
        log(f"speed benchmark: phase {name} done in {result['phase_seconds']} s")
    report["targets"] = _targets(report)
    return report


def merge_reports(earlier: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the phases it did not run taken from ``earlier`` (same machine), targets recomputed.

    Phases taken over are listed in ``kept_from_earlier`` with their dates and settings, so the report says which
    numbers are from which run.
    """
    kept = {name: result for name, result in earlier.get("phases", {}).items() if name not in report["phases"]}
    if not kept:
        return report
    merged = dict(report)
    merged["phases"] = {name: {**kept, **report["phases"]}[name] for name in PHASES if name in {**kept, **report["phases"]}}
    merged["kept_from_earlier"] = {
        name: {"date": result.get("date", earlier.get("machine", {}).get("date")), "config": earlier.get("config")}
        for name, result in kept.items()
    }
    merged["targets"] = _targets(merged)
    return merged


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    train = report["phases"].get("train")
    if train:
        for m in ("segpl", "bpl"):
            if m in train["methods"]:
                ratio = train["methods"][m]["ratio_to_supervised"]
                target = {"value": ratio, "target": f"<= {SSL_TARGET}", "met": ratio <= SSL_TARGET}
                targets[f"{m}_iteration_ratio"] = target
    for name in ("infer_ct", "infer_brats"):
        phase = report["phases"].get(name)
        if phase:
            frac = phase["tuned"]["fraction_of_matmul"]
            targets[f"{name}_fraction_of_matmul"] = {
                "value": frac, "target": f">= {MATMUL_TARGET}", "met": frac >= MATMUL_TARGET,
            }  # fmt: skip
    return targets


# ----------------------------------------------------------------------------------------------------------------
# report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, training-iteration ratios, inference table, memory, targets."""
    m = report["machine"]
    lines = [
        "# Speed benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} logical cores ({m['torch_threads']} torch threads), "
        f"GPU: {m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, MONAI {m['monai']}; device "
        f"`{m['device']}`; {m['date']}. fp32 matmul 2048^2: {m['matmul_gflops_fp32']} GFLOP/s.",
        "",
    ]
    for name, kept in report.get("kept_from_earlier", {}).items():
        lines += [f"Phase `{name}` is kept from an earlier run on this machine ({kept['date']}).", ""]
    train = report["phases"].get("train")
    if train:
        roi = "x".join(map(str, train["roi"]))
        lines += [
            f"## Training iteration (lung-vessel UNet, {train['images_per_iteration']} patches of {roi} per iteration: "
            f"supervised {train['images_per_iteration']} labelled; SSL {train['n_labeled']} labelled + "
            f"{train['n_unlabeled']} unlabelled; median of {train['repeats']} interleaved rounds)",
            "",
            "| method | median s / iteration | ratio to supervised (median) | ratio per round, min-max |",
            "|---|---|---|---|",
        ]
        for name, r in train["methods"].items():
            label = f"{name} ({train['robust_loss']})" if name == "teacher_student" else name
            spread = f"{min(r['ratios']):.2f}-{max(r['ratios']):.2f}" if r.get("ratios") else "-"
            lines.append(f"| {label} | {r['median_s']:.3f} | {r['ratio_to_supervised']:.3f} | {spread} |")
        lines += [f"\nPeak RSS of the training process: {train['process_peak_rss_mib']} MiB "
                  f"(after imports: {train['rss_after_imports_mib']} MiB).", ""]  # fmt: skip
    infer = [(n, report["phases"][n]) for n in ("infer_ct", "infer_brats") if n in report["phases"]]
    if infer:
        lines += [
            "## Sliding-window inference (plain: `monai.inferers.sliding_window_inference` defaults, sw_batch_size 1, "
            "no_grad; medssl: `optimize_for_inference` + `make_sliding_window_inferer`, inference_mode)",
            "",
            "| volume | network | path | sw batch | windows | median s | Mvoxel/s | GFLOP/s | of matmul | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in infer:
            vol = "x".join(map(str, r["shape"]))
            net = "UNet (lung)" if name == "infer_ct" else "TransBTS (BraTS 3D)"
            for path in ("plain", "tuned"):
                p = r[path]
                lines.append(
                    f"| {vol} | {net} | {'MONAI plain' if path == 'plain' else 'medssl'} | {p['sw_batch_size']} | "
                    f"{p['windows']} | {p['median_s']:.2f} | {p['voxels_per_s'] / 1e6:.2f} | {p['gflops']:.1f} | "
                    f"{100 * p['fraction_of_matmul']:.0f}% | {p['peak_memory_mib']} |"
                )
        lines += [
            "",
            "| volume | GFLOP per window | matmul GFLOP/s (same process) | speed-up | max abs prob diff | Dice | "
            "process peak RSS MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in infer:
            a = r["agreement"]
            lines.append(
                f"| {'x'.join(map(str, r['shape']))} | {r['flops_per_window'] / 1e9:.2f} | {r['matmul_gflops']} | "
                f"{r['speedup']:.2f}x | {a['max_abs_prob_diff']:.2e} | {a['dice']:.5f} | {r['process_peak_rss_mib']} |"
            )
        lines.append("")
        for name, r in infer:
            if "bf16" in r:
                b = r["bf16"]
                lines.append(
                    f"Precision check ({'x'.join(map(str, r['shape']))}, one window batch of the tuned network): bf16 "
                    f"autocast runs at {b['speed_vs_fp32']:.2f}x the speed of fp32, max abs probability difference "
                    f"{b['max_abs_prob_diff']:.2e}, Dice {b['dice']:.4f} against fp32; medssl's path stays fp32."
                )
                lines.append("")
    if report.get("targets"):
        lines += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
        for name, t in report["targets"].items():
            lines.append(f"| {name} {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``speed.json`` and ``speed.md`` to ``out`` atomically; return both paths."""
    out = Path(out)
    json_path = write_json(report, out / "speed.json")
    md_path = out / "speed.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(report) + "\n")
    return json_path, md_path


# ----------------------------------------------------------------------------------------------------------------
# command line


def _shape(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1x256x256x200, got '{text}'") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got '{text}'")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``medssl bench speed``."""
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds per phase)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=None, help="phases to run (default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--train-repeats", type=int, default=None, help="interleaved rounds of training iterations")
    parser.add_argument("--infer-repeats", type=int, default=None, help="interleaved rounds of CT inference")
    parser.add_argument("--brats-repeats", type=int, default=None, help="interleaved rounds of BraTS inference")
    parser.add_argument("--ct-shape", type=_shape, default=None, help="CT volume C x H x W x D (default 1x256x256x200)")
    parser.add_argument("--brats-shape", type=_shape, default=None, help="BraTS volume (default 4x240x240x155)")
    parser.add_argument("--robust-loss", default=None, choices=("ce", "gce", "bce", "sce"), help="teacher-student loss")
    parser.add_argument("--no-isolate", action="store_true", help="run phases in this process (peak memory is shared)")
    parser.add_argument("--update", action="store_true",
                        help="keep the phases not run now from the report already in --out (rerun some phases only)")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark settings of parsed ``args``."""
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


def run(args: argparse.Namespace) -> int:
    """Run the benchmark of ``args``, write the reports, print the Markdown; return the exit status."""
    cfg = config_from_args(args)
    report = run_benchmark(cfg, isolate=not args.no_isolate, log=lambda s: print(s, file=sys.stderr, flush=True))
    earlier = Path(args.out) / "speed.json"
    if getattr(args, "update", False) and earlier.is_file():
        report = merge_reports(read_json(earlier), report)
    json_path, md_path = write_report(report, args.out)
    print(to_markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/speed.py [options]``."""
    parser = argparse.ArgumentParser(prog="medssl bench speed", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
