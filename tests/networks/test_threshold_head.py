"""The threshold head: what one threshold covers is its ``scope`` (per image or per pixel); ``mode``, its old name,
is an error that names ``scope``."""

from __future__ import annotations

import pytest
import torch

from medssl.networks import ThresholdHead
from medssl.networks.threshold_head import SCOPES


@pytest.mark.parametrize("scope, shape", [("per_image", (2, 1)), ("per_pixel", (2, 1, 4, 4))])
def test_scope_sets_what_one_threshold_covers(scope, shape):
    head = ThresholdHead(2, in_channels=6, scope=scope, init_mu=0.3)
    mu, logvar = head(torch.zeros(2, 6, 4, 4))
    assert head.scope == scope and mu.shape == logvar.shape == shape
    assert torch.allclose(mu, torch.tensor(0.3))  # started at the prior


def test_the_old_name_of_scope_is_an_error_naming_it():
    with pytest.raises(TypeError, match="'mode' was renamed 'scope'"):
        ThresholdHead(2, in_channels=6, mode="per_pixel")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['width'\\]"):
        ThresholdHead(2, in_channels=6, width=3)
    with pytest.raises(ValueError, match="scope must be one of"):
        ThresholdHead(2, in_channels=6, scope="per_voxel")
    assert SCOPES == ("per_image", "per_pixel")
