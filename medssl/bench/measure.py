"""Measuring: timers, peak resident memory, FLOPs, this machine's matmul rate, and what machine this is.

What the speed benchmark measures with, and :func:`machine_info`, the one description of the machine that every
benchmark report carries.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "timed",
    "count_flops",
    "matmul_gflops",
    "max_rss_bytes",
    "PeakRSS",
    "mib",
    "median",
    "machine_info",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """``(seconds, fn())``, the device synchronised before and after (so CUDA kernels are counted)."""
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
    times = [timed(lambda: a @ b, device)[0] for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def max_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class PeakRSS:
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

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def mib(n: int | None) -> float | None:
    """Bytes as MiB, to 0.1 (None stays None)."""
    return None if n is None else round(n / 2**20, 1)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        return cpu


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """CPU model, cores, threads, library versions, the device and its GPU (if any), and the date.

    Args:
        device: the device the benchmark runs on (default: CUDA when available, else the CPU).
    """
    import monai

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
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
