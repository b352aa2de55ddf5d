"""Bayesian pseudo-labels, SegPL-VI (Xu et al., arXiv 2305.01747): the threshold is a learned latent variable."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_choice, check_in_range, check_positive
from medssl.engines.keys import SSLKeys
from medssl.transforms.thresholding import hard_pseudo_labels, soft_pseudo_labels
from medssl.losses.threshold_kl import gaussian_kl
from medssl.networks.threshold_head import ThresholdHead

__all__ = ["BayesianPseudoLabelHandler"]

# Keep the sampled threshold strictly inside (0, 1): a cut at 0 or 1 makes every voxel foreground or background.
_T_MIN, _T_MAX = 1e-3, 1.0 - 1e-3


class BayesianPseudoLabelHandler:
    """The E-step of Bayesian pseudo-labels: sample the threshold from a learned posterior, then cut.

    A :class:`~medssl.networks.ThresholdHead` reads the features of the network layer ``feature_layer`` (captured
    with a forward hook, so any MONAI network works) for the unlabelled images and predicts ``mu`` and
    ``log sigma^2``. The threshold is sampled with the reparameterisation ``T = mu + sigma * eps``, clamped into
    (0, 1), and the KL of ``N(mu, sigma^2)`` to the prior ``N(prior_mu, prior_std^2)`` joins the loss as the extra
    term ``kl`` with weight ``kl_weight * unsup_weight`` (ramped with the unsupervised weight).

    Modes:
        ``kl_only``: a hard cut, as the authors' public code does; the head learns only through the KL term.
        ``elbo``: a soft cut ``sigmoid((p - T) / tau)`` (binary: the soft pseudo-label; multi-class: a voxel weight
        on the argmax pseudo-label), so the data term trains the threshold too.

    ``p`` is ``sigmoid(z / temperature)`` (softmax for multi-class), as in the authors' code (temperature 2).
    Defaults follow the authors' code in 2D (prior 0.5 / 0.1); their 3D setting is ``prior_mu=0.7, prior_std=0.15``.
    The head's parameters are added to the trainer's optimiser when it attaches, unless already there.

    Args:
        head: the threshold head.
        feature_layer: dotted name of the network module whose output the head reads (``network.get_submodule``).
        prior_mu: prior mean of the threshold, in (0, 1).
        prior_std: prior standard deviation, positive.
        mode: ``"kl_only"`` or ``"elbo"``.
        temperature: logits are divided by it before the sigmoid/softmax.
        tau: sharpness of the soft cut in ``elbo`` mode (smaller is closer to a hard cut).
        kl_weight: weight of the KL term (multiplied by ``engine.state.unsup_weight``).
        head_lr: learning rate of the head's parameter group (default: the optimiser's first group's).

    Raises:
        ValueError: an argument out of range; (on attach) the network has no module ``feature_layer``.
    """

    def __init__(
        self,
        head: ThresholdHead,
        feature_layer: str,
        prior_mu: float = 0.5,
        prior_std: float = 0.1,
        mode: str = "kl_only",
        temperature: float = 2.0,
        tau: float = 0.05,
        kl_weight: float = 0.1,
        head_lr: float | None = None,
    ) -> None:
        if not isinstance(head, torch.nn.Module):
            raise TypeError(f"head must be a torch.nn.Module (a ThresholdHead), got {type(head).__name__}.")
        self.head = head
        self.feature_layer = feature_layer
        self.prior_mu = check_in_range("prior_mu", prior_mu, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.prior_std = check_positive("prior_std", prior_std)
        self.mode = check_choice("mode", mode, ("kl_only", "elbo"))
        self.temperature = check_positive("temperature", temperature)
        self.tau = check_positive("tau", tau)
        self.kl_weight = check_positive("kl_weight", kl_weight, strict=False)
        self.head_lr = None if head_lr is None else check_positive("head_lr", head_lr)
        self._features: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        """Hook the feature layer of ``engine.network``, put the head in the optimiser and on the device."""
        network = getattr(engine.network, "module", engine.network)  # the wrapped network of DDP / DataParallel
        try:
            layer = network.get_submodule(self.feature_layer)
        except AttributeError:
            names = [n for n, _ in network.named_modules() if n][:20]
            raise ValueError(
                f"feature_layer '{self.feature_layer}' is not a module of {type(network).__name__}; "
                f"some of its modules: {names}"
            ) from None
        layer.register_forward_hook(self._capture)
        self.head.to(engine.state.device)
        in_optimizer = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
        new = [p for p in self.head.parameters() if id(p) not in in_optimizer]
        if new:
            group: dict[str, Any] = {"params": new}
            if self.head_lr is not None:
                group["lr"] = self.head_lr
            engine.optimizer.add_param_group(group)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def _capture(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        # Only training forwards matter; validation and inference must not keep features alive.
        self._features = output if module.training else None

    def sample_threshold(self, features: torch.Tensor, spatial_shape: torch.Size) -> tuple[torch.Tensor, ...]:
        """Return ``(T, mu, logvar)`` for ``features``; per-pixel maps are resized to ``spatial_shape``."""
        mu, logvar = self.head(features)
        if mu.ndim > 2 and mu.shape[2:] != spatial_shape:
            mode = "bilinear" if len(spatial_shape) == 2 else "trilinear"
            mu = F.interpolate(mu, size=spatial_shape, mode=mode, align_corners=False)
            logvar = F.interpolate(logvar, size=spatial_shape, mode=mode, align_corners=False)
        eps = torch.randn_like(mu)
        threshold = (mu + torch.exp(0.5 * logvar) * eps).clamp(_T_MIN, _T_MAX)
        return threshold, mu, logvar

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        logits = out.get(SSLKeys.UNLABELED_PRED)
        if logits is None or self._features is None:
            return
        n_u = logits.shape[0]
        features = self._features[-n_u:]  # the unlabelled images come last in the joint forward pass
        self._features = None
        threshold, mu, logvar = self.sample_threshold(features, logits.shape[2:])
        t_map = threshold.view(n_u, 1, *([1] * (logits.ndim - 2))) if threshold.ndim == 2 else threshold
        if self.mode == "kl_only":
            pseudo, mask = hard_pseudo_labels(logits, t_map.detach(), self.temperature)
        else:
            pseudo, mask = soft_pseudo_labels(logits, t_map, self.tau, self.temperature)
        out[SSLKeys.PSEUDO_LABEL] = pseudo
        if mask is not None:
            out[SSLKeys.PSEUDO_MASK] = mask
        out[SSLKeys.THRESHOLD] = threshold.detach()
        kl = gaussian_kl(mu, logvar, self.prior_mu, self.prior_std).mean()
        weight = self.kl_weight * float(getattr(engine.state, "unsup_weight", 1.0))
        out.setdefault(SSLKeys.LOSS_TERMS, {})["kl"] = weight * kl
