"""``ResizedSliceInferer``: a 2D network on each slice at a fixed size, the logits back at the slice's size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.inference.slices import ResizedSliceInferer


def test_volume_equals_the_network_on_each_resized_slice():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 4, 3, padding=1)
    volume = torch.rand(2, 1, 24, 20, 3)
    out = ResizedSliceInferer((16, 16), sw_batch_size=4)(volume, net)
    assert out.shape == (2, 4, 24, 20, 3)
    for b in range(2):
        for z in range(3):
            x = F.interpolate(volume[b : b + 1, :, :, :, z], size=(16, 16), mode="bilinear", align_corners=False)
            expected = F.interpolate(net(x), size=(24, 20), mode="bilinear", align_corners=False)[0]
            assert torch.allclose(out[b, :, :, :, z], expected, atol=1e-6)


def test_slices_at_the_network_size_are_not_resampled():
    net = torch.nn.Conv2d(1, 2, 1)
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(ResizedSliceInferer((16, 16), sw_batch_size=2)(x, net), net(x), atol=1e-6)


def test_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match="two positive sizes"):
        ResizedSliceInferer((16, 16, 16))
    with pytest.raises(ValueError, match="expected"):
        ResizedSliceInferer((16, 16))(torch.zeros(1, 16, 16), torch.nn.Identity())
