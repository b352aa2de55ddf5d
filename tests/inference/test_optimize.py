"""Inference rewrites compute the network's function: batch-norm folding, fused attention, voxel-shuffle upsampling."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from medssl.inference.optimize import VoxelShuffleConvTranspose, fold_batch_norm, optimize_for_inference
from medssl.networks import TransBTS


def _unet_with_statistics():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=2, norm="batch")
    with torch.no_grad():  # non-trivial running statistics
        net.train()(torch.randn(2, 1, 16, 16, 16) * 3 + 1)
    return net.eval()


def test_unet_batch_norm_folded_same_output():
    net = _unet_with_statistics()
    fast = optimize_for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())  # the original is untouched
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    assert not any(p.requires_grad for p in fast.parameters())
    # on the CPU a convolution-only network gets channels-last weights; the original keeps its layout
    weights = [p for p in fast.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    assert not all(p.is_contiguous() for p in weights)  # (a one-channel weight is contiguous in both layouts)
    assert all(p.is_contiguous() for p in net.parameters())
    kept = optimize_for_inference(net, channels_last=False)
    assert all(p.is_contiguous() for p in kept.parameters())


def test_fold_batch_norm_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(UNet(3, 1, 1, channels=(4, 8), strides=(2,), norm="batch").train())


def test_transbts_fused_attention_and_voxel_shuffle_same_output():
    torch.manual_seed(0)
    net = TransBTS(3, 4, 3, img_size=16, channels=(4, 8, 8, 16), embed_dim=32, num_layers=1, num_heads=4, mlp_dim=64)
    net.eval()
    fast = optimize_for_inference(net)
    assert sum(isinstance(m, VoxelShuffleConvTranspose) for m in fast.modules()) == 3
    assert all(b.attn.use_flash_attention for b in fast.transformer)
    assert not any(b.attn.use_flash_attention for b in net.transformer)
    assert all(p.is_contiguous() for p in fast.parameters())  # attention: the default layout is kept
    x = torch.randn(2, 4, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
        # channels-last asked for: the voxel shuffles and the transformer still compute the same function
        torch.testing.assert_close(optimize_for_inference(net, channels_last=True)(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "layer,shape",
    [
        (torch.nn.ConvTranspose3d(3, 5, 2, stride=2), (2, 3, 4, 5, 3)),
        (torch.nn.ConvTranspose3d(3, 2, (2, 1, 2), stride=(2, 1, 2), bias=False), (1, 3, 3, 4, 2)),
        (torch.nn.ConvTranspose2d(4, 3, 3, stride=3), (2, 4, 5, 6)),
    ],
)
def test_voxel_shuffle_equals_transposed_convolution(layer, shape):
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(VoxelShuffleConvTranspose(layer)(x), layer(x), rtol=1e-5, atol=1e-6)


def test_voxel_shuffle_rejects_overlapping_kernels():
    layer = torch.nn.ConvTranspose3d(2, 2, 3, stride=2, padding=1, output_padding=1)
    assert not VoxelShuffleConvTranspose.supports(layer)
    with pytest.raises(ValueError, match="kernel == stride"):
        VoxelShuffleConvTranspose(layer)
