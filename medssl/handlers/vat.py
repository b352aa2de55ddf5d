"""Virtual adversarial training (Miyato et al., TPAMI 2018; paper 003): consistency under the worst small perturbation.

For the unlabelled images ``x`` with predictions ``p(x)`` (detached), the adversarial direction is found by power
iteration: start from a random unit direction ``d``; repeat ``iterations`` times ``d <- normalise(grad_d KL(p(x) ||
p(x + xi d)))``; then ``r_adv = eps * d`` and the loss is ``KL(p(x) || p(x + r_adv))`` (per voxel, averaged), weighted
by the unsupervised weight. Directions are normalised per image (L2 over channels and voxels). Paper 003 tuned
``xi = 10, eps = 10, iter = 5`` on CIFAR pixel values; medssl's images are normalised, so its defaults are Miyato's
``xi = 1e-6`` and one power iteration with ``eps`` in units of a normalised image (all three are settings). The
network's batch-norm statistics are not updated by the perturbed passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_positive
from medssl.engines.keys import SSLKeys

__all__ = ["VATHandler", "vat_direction", "prediction_kl"]


def _normalise(d: torch.Tensor) -> torch.Tensor:
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d / norm.view(-1, *([1] * (d.ndim - 1)))


def prediction_kl(logits_clean: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """``KL(p_clean || p_perturbed)`` per voxel, averaged (softmax over channels; sigmoid for one channel)."""
    if logits_clean.shape[1] == 1:
        logits_clean = torch.cat([torch.zeros_like(logits_clean), logits_clean], dim=1)
        logits_perturbed = torch.cat([torch.zeros_like(logits_perturbed), logits_perturbed], dim=1)
    log_p = F.log_softmax(logits_clean, dim=1)
    log_q = F.log_softmax(logits_perturbed, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


@contextlib.contextmanager
def _frozen_batch_norm(network: torch.nn.Module) -> Iterator[None]:
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running statistics unchanged; the batch statistics still normalise
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def vat_direction(
    forward, x: torch.Tensor, logits: torch.Tensor, xi: float = 1e-6, iterations: int = 1, generator=None
) -> torch.Tensor:
    """The adversarial unit direction (per image) at ``x`` by ``iterations`` power iterations."""
    d = _normalise(torch.randn(x.shape, generator=generator).to(x))
    clean = logits.detach()
    for _ in range(iterations):
        d = d.requires_grad_(True)
        distance = prediction_kl(clean, forward(x + xi * d))
        (grad,) = torch.autograd.grad(distance, d)
        d = _normalise(grad.detach())
    return d


class VATHandler:
    """Hand over ``vat = w * KL(p(x) || p(x + r_adv))`` for the unlabelled images after the forward pass.

    Args:
        xi: step of the finite difference in the power iteration.
        eps: norm of the adversarial perturbation (per image).
        iterations: power iterations.

    Raises:
        ValueError: a non-positive argument.
    """

    def __init__(self, xi: float = 1e-6, eps: float = 2.0, iterations: int = 1) -> None:
        self.xi = check_positive("xi", xi)
        self.eps = check_positive("eps", eps)
        self.iterations = int(check_positive("iterations", iterations))

    def attach(self, engine: Engine) -> None:
        """Run after every forward pass."""
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        logits, x = out.get(SSLKeys.UNLABELED_PRED), out.get(SSLKeys.UNLABELED_IMAGE)
        weight = float(getattr(engine.state, "unsup_weight", 1.0))
        if logits is None or x is None or weight <= 0:  # no passes during the warm-up
            return

        def forward(images: torch.Tensor) -> torch.Tensor:
            return engine.inferer(images, engine.network)

        with _frozen_batch_norm(engine.network):
            d = vat_direction(forward, x, logits, self.xi, self.iterations)
            perturbed = forward(x + self.eps * d)
        out.setdefault(SSLKeys.LOSS_TERMS, {})["vat"] = weight * prediction_kl(logits.detach(), perturbed)
