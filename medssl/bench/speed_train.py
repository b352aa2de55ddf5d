"""The speed benchmark's ``train`` phase: what one training iteration of each semi-supervised method costs.

Methods that take more passes cost more: an EMA teacher's forward on the unlabelled images, a strong view each
(FixMatch one, UniMatch two plus the feature-perturbation pass), VAT's power iteration and perturbed pass. The
report gives each method's ratio to the supervised iteration. Each method of :data:`TRAIN_METHODS` (the methods of
:data:`medssl.methods.REGISTRY`, and the variants of :data:`medssl.methods.VARIANTS` whose pieces cost more or less
than their method's: another pseudo-label source or another cut) is built by :func:`medssl.methods.build_method` and
trains on the real :class:`~medssl.engines.SemiSupervisedTrainer` with the lung-vessel bundle's network, against
the supervised iteration with the same number of images in the batch (labelled + unlabelled). Iterations alternate between methods (A, B, A, B, ... with the order swapped each round).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medssl.bench.measure import median, mib, timed
from medssl.workflows.sizes import LUNG_BUNDLE, LUNG_FEATURE_LAYER, LUNG_ROI, lung_network
from medssl.methods import REGISTRY, VARIANTS, build_method, strong_views, variant
from medssl.transforms.presets import STRONG_KEYS

__all__ = ["TRAIN_METHODS", "bench_training"]

#: every method of the registry, the supervised reference first, then the variants whose pieces change an
#: iteration's cost: another source or cut, a strong view in the copy-paste
_COSTLY = {"source", "cut", "strong_view"}
TRAIN_METHODS = (*REGISTRY, *(v for v, (m, s) in VARIANTS.items() if v not in REGISTRY and _COSTLY & set(s)))


def _blob_labels(n: int, roi: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """Binary label maps with some structure (thresholded smooth noise, about 10% foreground)."""
    coarse = torch.randn(n, 1, *(max(2, r // 8) for r in roi), generator=gen)
    smooth = F.interpolate(coarse, size=tuple(roi), mode="trilinear", align_corners=False)
    return (smooth > 1.0).float()


def _train_batches(
    n_l: int, n_u: int, roi: Sequence[int], with_pseudo: bool, strong: int = 0, seed: int = 0
) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    labels = _blob_labels(n_l, roi, gen)
    labelled = {"image": labels * 0.6 + 0.2 * torch.rand(n_l, 1, *roi, generator=gen), "label": labels}
    pseudo = _blob_labels(n_u, roi, gen)
    unlabelled = {"image": pseudo * 0.6 + 0.2 * torch.rand(n_u, 1, *roi, generator=gen)}
    if with_pseudo:
        unlabelled["pseudo_label"] = pseudo
    for key in STRONG_KEYS[:strong]:  # the strong views the loader adds (their augmentation runs in loader workers)
        unlabelled[key] = unlabelled["image"] * 1.2 + 0.05 * torch.rand(n_u, 1, *roi, generator=gen)
    return labelled, unlabelled


def _build_trainer(
    name: str,
    network: nn.Module,
    device: torch.device,
    n_l: int,
    n_u: int,
    roi: Sequence[int],
    robust_loss: str,
    feature_channels: int,
):
    from monai.losses import DiceCELoss

    from medssl.engines import SemiSupervisedTrainer
    from medssl.networks import ThresholdHead

    # the lung bundle's threshold head (per image, prior N(0.7, 0.15^2)); the schedule at full weight from the start
    head = ThresholdHead(3, in_channels=feature_channels, scope="per_image")
    base, settings = (name, {}) if name in REGISTRY else variant(name)
    method = build_method(
        base, {"warmup": 0, "ramp": 0, "prior_mu": 0.7, "prior_std": 0.15, "robust_loss": robust_loss, **settings},
        network=network, head=head, feature_layer=LUNG_FEATURE_LAYER, run_length=1, unit="iterations",
    )  # fmt: skip
    # the supervised iteration has as many images as a semi-supervised one, all labelled
    labelled, unlabelled = _train_batches(
        n_l if method.uses_unlabeled else n_l + n_u, n_u, roi, with_pseudo=method.reads_pseudo_labels,
        strong=strong_views(name),
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-4, weight_decay=1e-5)
    return SemiSupervisedTrainer(
        device=device,
        max_epochs=0,
        train_data_loader=[labelled],
        epoch_length=1,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(sigmoid=True),
        unlabeled_data_loader=[unlabelled] if method.uses_unlabeled else None,
        unsup_loss_function=method.unsup_loss,
        train_handlers=method.handlers,
        amp=device.type == "cuda",
    )


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
    feature_channels: int = LUNG_BUNDLE.feature_channels,
    network_name: str = "lung-vessel UNet",
) -> dict[str, Any]:
    """Seconds per training iteration of each method, measured in interleaved rounds.

    The supervised iteration has ``n_labeled + n_unlabeled`` labelled images; the others ``n_labeled`` labelled and
    ``n_unlabeled`` unlabelled. Batches are made in memory (the data pipeline runs in loader workers, off this
    path). Each method trains its own copy of the same initial network (``network_fn``, whose layer ``model.1`` has
    ``feature_channels`` channels for the threshold head).
    """
    if "supervised" not in methods:
        raise ValueError(f"methods must include 'supervised' (the reference), got {list(methods)}.")
    torch.manual_seed(0)
    base = network_fn().to(device)
    trainers = {
        m: _build_trainer(m, copy.deepcopy(base), device, n_labeled, n_unlabeled, roi, robust_loss, feature_channels)
        for m in methods
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
            times[m].append(timed(lambda: _one_iteration(trainers[m]), device)[0])
    sup = times["supervised"]
    result: dict[str, Any] = {
        "network": network_name,
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
            "median_s": round(median(times[m]), 4),
            "ratio_to_supervised": round(median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    if device.type == "cuda":
        result["cuda_max_memory_mib"] = mib(torch.cuda.max_memory_allocated(device))
    return result
