"""The threshold head of Bayesian pseudo-labels: predicts the posterior N(mu, sigma^2) of the cut threshold."""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.networks.layers import Conv
from torch import nn

from medssl.checks import check_choice, check_in_range, check_positive, check_renamed

__all__ = ["ThresholdHead", "SCOPES"]

#: What one threshold covers: a whole image, or each pixel (voxel).
SCOPES = ("per_image", "per_pixel")


class ThresholdHead(nn.Module):
    """Read decoder features and predict ``mu`` and ``log sigma^2`` of the pseudo-label threshold.

    What one threshold covers (``scope``, a bundle's ``threshold_scope``):
    ``per_image``: global average pooling, then a two-layer MLP: ``mu`` and ``logvar`` of shape ``(B, 1)``.
    ``per_pixel``: two 1x1 convolutions: maps of shape ``(B, 1, *spatial)`` at the feature resolution.
    The last layer starts with zero weights and biases at the prior, so training starts from the prior threshold.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the feature map the head reads.
        hidden_channels: width of the hidden layer.
        scope: ``"per_image"`` or ``"per_pixel"``.
        init_mu: initial mean threshold, in (0, 1).
        init_std: initial standard deviation, positive.

    Raises:
        ValueError: an argument out of range.
        TypeError: an unknown keyword argument (``mode`` names the renamed ``scope``).

    >>> head = ThresholdHead(3, in_channels=16)
    >>> mu, logvar = head(torch.zeros(2, 16, 4, 4, 4))
    >>> mu.shape, round(float(mu[0].detach()), 3)
    (torch.Size([2, 1]), 0.5)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_channels: int = 32,
        scope: str = "per_image",
        init_mu: float = 0.5,
        init_std: float = 0.1,
        **unknown: Any,
    ) -> None:
        check_renamed("ThresholdHead argument", unknown, {"mode": "scope"}, TypeError)
        if unknown:
            raise TypeError(f"ThresholdHead got unexpected keyword arguments {sorted(unknown)}.")
        super().__init__()
        check_choice("spatial_dims", spatial_dims, (2, 3))
        check_positive("in_channels", in_channels)
        check_positive("hidden_channels", hidden_channels)
        self.scope = check_choice("scope", scope, SCOPES)
        check_in_range("init_mu", init_mu, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_positive("init_std", init_std)
        self.spatial_dims = spatial_dims
        if scope == "per_image":
            pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
            last = nn.Linear(hidden_channels, 2)
            self.net = nn.Sequential(pool, nn.Flatten(1), nn.Linear(in_channels, hidden_channels), nn.ReLU(), last)
        else:
            conv = Conv[Conv.CONV, spatial_dims]
            last = conv(hidden_channels, 2, kernel_size=1)
            self.net = nn.Sequential(conv(in_channels, hidden_channels, kernel_size=1), nn.ReLU(), last)
        self.last = last
        self.reset_prior(init_mu, init_std)

    def reset_prior(self, mu: float, std: float) -> None:
        """Start from the prior ``N(mu, std^2)``: the last layer's weights zero, its biases ``mu`` and ``log std^2``.

        Raises:
            ValueError: ``mu`` outside (0, 1) or ``std`` not positive.
        """
        check_in_range("mu", mu, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_positive("std", std)
        with torch.no_grad():
            self.last.weight.zero_()
            self.last.bias.copy_(torch.tensor([mu, 2.0 * math.log(std)]))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(B, 1)`` per image or ``(B, 1, *spatial)`` per pixel."""
        out = self.net(features)
        return out[:, :1], out[:, 1:2]
