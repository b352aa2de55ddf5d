"""The speed benchmark's inference phases: plain MONAI sliding-window inference against medssl's inference path.

On the same network and volume, plain ``monai.inferers.sliding_window_inference`` with its defaults
(``sw_batch_size=1``, under ``torch.no_grad``) against :func:`~medssl.inference.optimize.optimize_for_inference` with
:func:`~medssl.inference.predict.make_sliding_window_inferer` under ``torch.inference_mode``: voxels per second,
achieved GFLOP/s (FLOPs of one window batch, times the number of windows run) and that as a fraction of this
machine's fp32 matmul rate measured in the same process, peak memory, and the agreement of the two outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medssl.bench.measure import PeakRSS, count_flops, matmul_gflops, median, mib, timed

__all__ = ["bench_inference", "bench_validation"]


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
            with PeakRSS() as rss:
                seconds, out = timed(runs[name], device)
            outputs[name] = out.detach()
            times[name].append(seconds)
            if device.type == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated(device))
            elif rss.peak is not None:
                peaks[name].append(rss.peak)
    matmul.append(matmul_gflops(device, matmul_size))

    voxels = int(torch.tensor(shape[1:]).prod())
    mm_rate = median(matmul)
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
        t = median(times[name])
        gflops = flops_per_window * windows / t / 1e9
        result[name] = {
            "sw_batch_size": 1 if name == "plain" else sw_batch_size,
            "windows": windows,
            "seconds": [round(s, 3) for s in times[name]],
            "median_s": round(t, 3),
            "voxels_per_s": round(voxels / t),
            "gflops": round(gflops, 2),
            "fraction_of_matmul": round(gflops / mm_rate, 3),
            "peak_memory_mib": mib(max(peaks[name])) if peaks[name] else None,
        }
    result["speedup"] = round(median([p / q for p, q in zip(times["plain"], times["tuned"])]), 3)
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
        t32, outs["fp32"] = timed(fp32, device)
        t16, outs["bf16"] = timed(bf16, device)
        ratios.append(t32 / t16)
    agreement = _agreement(outs["fp32"].float(), outs["bf16"].float())
    return {"speed_vs_fp32": round(median(ratios), 3), **agreement}


def bench_validation(
    device: torch.device,
    network: nn.Module,
    shape: Sequence[int],
    roi: Sequence[int],
    scale: float = 1.0,
    volumes: int = 8,
    sw_batch_size: int = 4,
    repeats: int = 2,
) -> dict[str, Any]:
    """Seconds of one validation pass as a bundle runs it during training: ``volumes`` volumes of ``shape``
    (C, *spatial), each through the bundle's sliding window at a zoom of ``scale``
    (:class:`~medssl.inference.scaled.ScaledSlidingWindowInferer`, gaussian blending) and scored by the evaluator of
    :func:`~medssl.workflows.evaluation.build_evaluator` (binary Dice, the LA bundle's validation metric).
    """
    from medssl.inference.scaled import ScaledSlidingWindowInferer
    from medssl.workflows.evaluation import build_evaluator

    network = network.to(device)
    cases = []
    for i in range(volumes):
        image = _volume(shape, seed=i)
        cases.append({"image": image, "label": (image[:, :1] > 0.55).float()})
    inferer = ScaledSlidingWindowInferer(roi, scale, device, sw_batch_size=sw_batch_size)
    evaluator = build_evaluator(cases, network, roi, task="binary", device=device, inferer=inferer)
    evaluator.run()  # first-call allocations and kernel selection are not timed
    times = [timed(evaluator.run, device)[0] for _ in range(repeats)]
    zoomed = [max(1, round(s * scale)) for s in shape[1:]]
    return {
        "shape": list(shape),
        "scale": scale,
        "zoomed_shape": zoomed,
        "roi": list(roi),
        "volumes": volumes,
        "sw_batch_size": sw_batch_size,
        "repeats": repeats,
        "seconds": [round(t, 3) for t in times],
        "median_s": round(median(times), 3),
        "median_s_per_volume": round(median(times) / volumes, 3),
    }
