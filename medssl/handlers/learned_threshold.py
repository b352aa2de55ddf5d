"""The threshold of a pseudo-label cut as a latent variable learned by variational inference (paper 000, SegPL-VI).

A threshold is a piece any pseudo-label method can take (the contract: :class:`~medssl.handlers.threshold.Threshold`):
:class:`~medssl.handlers.threshold.FixedThreshold` is a number; :class:`LearnedThreshold` is the Bayesian threshold of
Xu et al. (arXiv 2305.01747). A :class:`~medssl.networks.ThresholdHead` reads the features of one network layer (a
forward hook, so any MONAI network works) and predicts the posterior ``q(T) = N(mu, sigma^2)``; the cut uses a
reparameterised sample ``T = mu + sigma * eps``, and ``KL(q || p)`` to the prior ``p(T) = N(prior_mu, prior_std^2)``
joins the loss.

What trains the head (``fit``, the method setting ``threshold_fit``):

- ``kl_only``, the authors' released code: the cut is hard, so no gradient reaches ``T`` from the data; the head
  learns from the KL alone. Started at the prior (as the authors start it), it stays there: the threshold is then a
  draw from the prior. Kept as the reference.
- ``elbo`` (medssl's default): the evidence is the labelled images, where the right cut is known. There a soft cut
  ``sigmoid((s - T) / tau)`` of the selection score ``s`` (binary: ``p``; multi-class: the top probability) is fitted
  by binary cross-entropy to what the cut should select (binary: the foreground; multi-class: the voxels whose argmax
  is right), so ``q(T)`` maximises ``E_q[log p(labels | T)] - KL(q || p)``, the evidence lower bound of the threshold
  given the labelled data. The head reads the same decoder features on unlabelled images and cuts their
  pseudo-labels with what it learned. The predictions are detached: only the threshold learns from this term.
  (An earlier medssl ``elbo`` let the unsupervised loss train ``T``; that loss falls as the cut keeps fewer voxels,
  so it pushed ``T`` towards 1, which is why the data term is now the labelled likelihood.)

Noise: one threshold per image drawn with the posterior's whole spread (sd 0.1-0.15) cuts some images far from the
mean. The authors' 3D code averages a 256-dimensional sample per batch; here ``samples`` draws are averaged per image
(``eps`` with sd ``1 / sqrt(samples)``), so ``samples=1`` is one plain draw.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine

from medssl.checks import check_choice, check_in_range, check_positive
from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers.threshold import Threshold
from medssl.losses.threshold_kl import gaussian_kl
from medssl.transforms.thresholding import selection_scores

__all__ = ["LearnedThreshold", "FITS"]

#: What trains the head: the KL alone (the authors' code) or the evidence lower bound (see the module docstring).
FITS = ("kl_only", "elbo")
# Keep the sampled threshold strictly inside (0, 1): a cut at 0 or 1 makes every voxel foreground or background.
_T_MIN, _T_MAX = 1e-3, 1.0 - 1e-3


class LearnedThreshold(Threshold):
    """The Bayesian threshold: see the module docstring. Its state is the head's, which the bundle checkpoints.

    Args:
        head: the threshold head (its parameters join the trainer's optimiser when this attaches).
        feature_layer: dotted name of the network module whose output the head reads.
        prior_mu: prior mean, in (0, 1).
        prior_std: prior standard deviation, positive.
        fit: ``"elbo"`` or ``"kl_only"`` (what trains the head).
        samples: draws averaged per image (1: one plain draw).
        tau: sharpness of the soft cut of the ``elbo`` data term.
        kl_weight: weight of the KL term (``kl_only``: times the unsupervised weight, as the authors ramp it).
        data_weight: weight of the ``elbo`` data term.
        temperature: logits are divided by it before the sigmoid/softmax.
        head_lr: learning rate of the head's parameter group (default: the optimiser's first group's).

    Raises:
        TypeError: ``head`` is not a module.
        ValueError: an argument out of range; (on attach) the network has no module ``feature_layer``.
    """

    name = "learned_threshold"

    def __init__(
        self,
        head: torch.nn.Module,
        feature_layer: str,
        prior_mu: float = 0.5,
        prior_std: float = 0.1,
        fit: str = "elbo",
        samples: int = 256,
        tau: float = 0.05,
        kl_weight: float = 0.1,
        data_weight: float = 1.0,
        temperature: float = 1.0,
        head_lr: float | None = None,
    ) -> None:
        if not isinstance(head, torch.nn.Module):
            raise TypeError(f"head must be a torch.nn.Module (a ThresholdHead), got {type(head).__name__}.")
        self.head = head
        self.feature_layer = feature_layer
        self.prior_mu = check_in_range("prior_mu", prior_mu, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.prior_std = check_positive("prior_std", prior_std)
        self.fit = check_choice("fit", fit, FITS)
        self.samples = int(check_positive("samples", samples))
        self.tau = check_positive("tau", tau)
        self.kl_weight = check_positive("kl_weight", kl_weight, strict=False)
        self.data_weight = check_positive("data_weight", data_weight, strict=False)
        self.temperature = check_positive("temperature", temperature)
        self.head_lr = None if head_lr is None else check_positive("head_lr", head_lr)
        self._features: torch.Tensor | None = None
        self._armed = False
        self._seed: int | None = None
        self._generator: torch.Generator | None = None

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
        engine.add_event_handler(SSLEvents.INPUTS_READY, self._arm)
        # The draws come from a generator of their own, seeded from the run's seed: they leave the global random
        # stream (the loaders' shuffles, the mixing boxes) as a run without a learned threshold has it, so such a
        # method stays paired with the supervised control until its unsupervised loss starts.
        self._seed, self._generator = torch.initial_seed(), None
        self.head.to(engine.state.device)
        in_optimizer = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
        new = [p for p in self.head.parameters() if id(p) not in in_optimizer]
        if new:
            group: dict[str, Any] = {"params": new}
            if self.head_lr is not None:
                group["lr"] = self.head_lr
            engine.optimizer.add_param_group(group)

    def _arm(self, engine: Engine) -> None:
        self._armed, self._features = True, None

    def _capture(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        # only the trainer's joint pass is kept, not validation, inference or a method's extra passes (strong views)
        if self._armed and module.training:
            self._features, self._armed = output, False

    def sample(self, features: torch.Tensor, spatial_shape: torch.Size) -> tuple[torch.Tensor, ...]:
        """``(T, mu, logvar)`` for ``features``: per image ``(B, 1)``, or per pixel resized to ``spatial_shape``.

        The features are detached: the threshold learns from the network's features, the network does not learn to
        serve the threshold.
        """
        mu, logvar = self.head(features.detach())
        if mu.ndim > 2 and mu.shape[2:] != spatial_shape:
            mode = "bilinear" if len(spatial_shape) == 2 else "trilinear"
            mu = F.interpolate(mu, size=spatial_shape, mode=mode, align_corners=False)
            logvar = F.interpolate(logvar, size=spatial_shape, mode=mode, align_corners=False)
        eps = self._noise(mu) / math.sqrt(self.samples)  # the mean of `samples` standard normal draws
        return (mu + torch.exp(0.5 * logvar) * eps).clamp(_T_MIN, _T_MAX), mu, logvar

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws shaped as ``like``: from the threshold's own generator once attached, else global."""
        if self._seed is None:
            return torch.randn_like(like)
        if self._generator is None or self._generator.device != like.device:
            self._generator = torch.Generator(device=like.device).manual_seed(self._seed)
        return torch.randn(like.shape, generator=self._generator, device=like.device, dtype=like.dtype)

    def __call__(self, engine: Engine, logits_u: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The cut of the unlabelled images of this iteration (detached) and the loss terms that train the head.

        Raises:
            RuntimeError: no features were captured (the feature layer did not run in the trainer's forward pass).
        """
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError(f"the threshold head got no features from '{self.feature_layer}' in this iteration")
        out = engine.state.output
        n_u = logits_u.shape[0]
        n_l = features.shape[0] - n_u  # the labelled images come first in the joint forward pass
        threshold, mu, logvar = self.sample(features, logits_u.shape[2:])
        kl = gaussian_kl(mu, logvar, self.prior_mu, self.prior_std).mean()
        if self.fit == "kl_only":
            terms = {"kl": self.kl_weight * float(getattr(engine.state, "unsup_weight", 1.0)) * kl}
        else:
            terms = {"kl": self.kl_weight * kl}
            logits_l, label = out.get(SSLKeys.PRED), out.get(SSLKeys.LABEL)
            if n_l > 0 and logits_l is not None and label is not None:
                score, target = selection_scores(logits_l, label, self.temperature)
                cut = torch.sigmoid((score - self.as_map(threshold[:n_l], score.ndim)) / self.tau)
                terms["threshold_fit"] = self.data_weight * F.binary_cross_entropy(cut, target)
        return threshold[n_l:].detach(), terms
