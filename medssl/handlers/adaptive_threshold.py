"""FreeMatch's self-adaptive threshold (Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised
Learning", ICLR 2023), a threshold piece for the weak-to-strong methods.

Two moving averages of the model's predictions on the weakly augmented unlabelled images, updated every iteration
with momentum ``lambda`` (the paper's 0.999):

- the global threshold ``tau_t = lambda * tau_{t-1} + (1 - lambda) * mean(max_c q(c))``, the model's mean confidence;
- the class means ``p_t(c) = lambda * p_{t-1}(c) + (1 - lambda) * mean(q(c))``;

and a voxel whose most likely class is ``c`` is kept when its probability reaches ``tau_t(c) = tau_t * p_t(c) /
max_c' p_t(c')`` (the paper's MaxNorm). Both start at ``1 / C``, as the paper and USB's implementation start them.
The means are over every voxel of the batch, so in segmentation the classes' shares of the image set their cuts: the
background, most voxels, keeps the global cut, and a structure that covers a few percent of the image gets a cut a
few percent as high, so its predicted voxels are kept where a single cut (FixMatch's 0.95) would drop the uncertain
ones. That is the point of trying it here: the pseudo-labels of the real BraTS folds lost their tumour over training.
On ACDC it scored below a fixed cut at 0.5, with more far-off false positives: every voxel predicted as heart was
kept (benchmarks/RESULTS.md). FreeMatch's second part, the self-adaptive fairness loss, is not included.

Binary networks (one channel) count as two classes, background ``1 - p`` and foreground ``p``. Under data
parallelism the batch means are averaged over the processes, so every process cuts with the same thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine
from monai.utils import convert_to_tensor

from medssl.checks import check_in_range, check_positive
from medssl.handlers.threshold import Threshold
from medssl.transforms.thresholding import probabilities

__all__ = ["SelfAdaptiveThreshold"]


class SelfAdaptiveThreshold(Threshold):
    """FreeMatch's self-adaptive threshold: see the module docstring.

    Args:
        momentum: momentum ``lambda`` of the moving averages, in [0, 1).
        temperature: logits are divided by it before the sigmoid/softmax (the cut's temperature).
    """

    #: The pseudo-label gate does not range-check this cut: a class's share times the mean confidence, it is not a
    #: cut that has left its range when the background's passes 0.99 (a confident model's does).
    range_gated = False
    name = "adaptive_threshold"

    def __init__(self, momentum: float = 0.999, temperature: float = 1.0) -> None:
        self.momentum = check_in_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        self.temperature = check_positive("temperature", temperature)
        #: ``tau_t`` (a 0-d tensor) and ``p_t`` (one value per class); None until the first batch says how many
        self.global_threshold: torch.Tensor | None = None
        self.class_means: torch.Tensor | None = None

    def class_thresholds(self) -> torch.Tensor:
        """``tau_t(c)`` of every class (after the last update)."""
        if self.global_threshold is None or self.class_means is None:
            raise RuntimeError("the self-adaptive threshold has seen no batch yet")
        return self.global_threshold * self.class_means / self.class_means.max()

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Move the averages towards the batch ``probs`` ``(B, C, *spatial)`` (C >= 2)."""
        classes = probs.shape[1]
        confidence = probs.max(dim=1).values.mean().reshape(1)
        batch = torch.cat([confidence, probs.transpose(0, 1).reshape(classes, -1).mean(1)]).double()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch)
            batch /= dist.get_world_size()
        if self.global_threshold is None or self.class_means is None or len(self.class_means) != classes:
            self.global_threshold = torch.tensor(1.0 / classes, dtype=torch.float64)
            self.class_means = torch.full((classes,), 1.0 / classes, dtype=torch.float64)
        m = self.momentum
        self.global_threshold = m * self.global_threshold.to(batch.device) + (1 - m) * batch[0]
        self.class_means = m * self.class_means.to(batch.device) + (1 - m) * batch[1:]

    def __call__(self, engine: Engine, logits_u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Update with this iteration's weak-view predictions; return the cut of each voxel ``(B, 1, *spatial)``
        (the threshold of its most likely class) and no loss terms."""
        with torch.no_grad():
            logits = convert_to_tensor(logits_u.detach(), track_meta=False)  # plain tensors: the cut indexes by class
            probs = probabilities(logits.float(), self.temperature)
            if probs.shape[1] == 1:
                probs = torch.cat([1.0 - probs, probs], dim=1)
            self.update(probs)
            cut = self.class_thresholds().to(probs.dtype)[probs.argmax(dim=1, keepdim=True)]
        return cut, {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The moving averages (empty before the first batch), for a checkpoint."""
        if self.global_threshold is None or self.class_means is None:
            empty = torch.zeros(0, dtype=torch.float64)
            return {"global_threshold": empty, "class_means": empty.clone()}
        return {"global_threshold": self.global_threshold.detach().cpu().reshape(1),
                "class_means": self.class_means.detach().cpu()}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        tau, means = torch.as_tensor(state["global_threshold"]), torch.as_tensor(state["class_means"])
        if tau.numel() == 0:
            self.global_threshold = self.class_means = None
        else:
            self.global_threshold, self.class_means = tau.double().reshape(()), means.double()
