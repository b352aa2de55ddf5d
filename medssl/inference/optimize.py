"""Rewriting a trained network into a faster one that computes the same function, for inference only.

Three rewrites, each exact up to float rounding and each a no-op where it does not apply:

- **batch norm folded into the convolution before it** (eval-mode statistics become part of the weights), in MONAI's
  ``Convolution`` blocks (``conv`` then ``adn`` starting with ``N``) and in any ``nn.Sequential`` where a
  convolution is directly followed by a batch norm: one pass over the feature map less per layer;
- **MONAI ``SABlock`` switched to ``scaled_dot_product_attention``**: the fused kernel never writes the
  ``tokens x tokens`` attention matrix, which dominates a 3D Transformer's time on the CPU (TransBTS at 128^3 has
  4096 tokens: a 64 MB matrix per head);
- **non-overlapping transposed convolutions** (kernel == stride, no padding, e.g. ``UnetUpBlock``'s) run as one
  convolution to ``C_out * prod(stride)`` channels and a voxel shuffle: the same FLOPs through the fast convolution
  path instead of PyTorch's slow CPU transposed convolution;
- **convolution weights in channels-last layout** (on the CPU, for networks of convolutions only): PyTorch then runs
  every convolution with oneDNN's channels-last kernels, which keep the vector units busier on the few channels of a
  3D segmentation network's high-resolution levels (the lung bundle's UNet: 1.4x; a network with attention blocks
  such as TransBTS gains nothing from it, so they keep the default layout).

The network passed in is never modified: :func:`optimize_for_inference` works on a copy.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from monai.networks.blocks.selfattention import SABlock
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "VoxelShuffleConvTranspose",
    "fold_batch_norm",
    "use_fused_attention",
    "use_channels_last",
    "optimize_for_inference",
]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _foldable(bn: nn.Module) -> bool:
    return isinstance(bn, _BatchNorm) and bn.track_running_stats and bn.running_mean is not None


def fold_batch_norm(network: nn.Module) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution into it, in place; return how many.

    The network must be in eval mode (running statistics are what gets folded).

    Raises:
        ValueError: ``network`` is in training mode.
    """
    if network.training:
        raise ValueError("fold_batch_norm needs a network in eval mode (call network.eval() first).")
    folded = 0
    for module in list(network.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (next_name, nxt) in zip(children, children[1:]):
            if not isinstance(conv, _CONV + _CONV_T):
                continue
            owner, bn_name = module, next_name
            # MONAI's Convolution is Sequential(conv, adn) with adn = Sequential(N, D, A) in its "ordering".
            if isinstance(nxt, nn.Sequential):
                first = next(iter(nxt.named_children()), None)
                if first is None:
                    continue
                owner, bn_name = nxt, first[0]
            bn = getattr(owner, bn_name)
            if not _foldable(bn) or bn.num_features != conv.out_channels:
                continue
            setattr(module, name, fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, _CONV_T)))
            setattr(owner, bn_name, nn.Identity())
            folded += 1
    return folded


def use_fused_attention(network: nn.Module) -> int:
    """Switch MONAI ``SABlock`` modules to ``scaled_dot_product_attention``, in place; return how many.

    Blocks that save attention maps or use relative position embeddings (which the fused path does not support)
    are left alone. The fused path of MONAI applies ``dropout_rate`` regardless of mode, so it is set to 0 here:
    this is for inference only.
    """
    switched = 0
    for module in network.modules():
        if isinstance(module, SABlock) and not module.save_attn and module.rel_positional_embedding is None:
            module.use_flash_attention = True
            module.dropout_rate = 0.0
            switched += 1
    return switched


class VoxelShuffleConvTranspose(nn.Module):
    """A transposed convolution with ``kernel_size == stride`` (no overlap) as a 1x1 convolution and a voxel shuffle.

    Each input voxel maps to its own ``prod(stride)`` block of output voxels, so the layer is a linear map from
    ``C_in`` to ``C_out * prod(stride)`` channels followed by a rearrangement: the same FLOPs as the transposed
    convolution, computed by the convolution kernels PyTorch optimises best on the CPU.

    Args:
        layer: a ``ConvTranspose{1,2,3}d`` with ``kernel_size == stride``, no padding or output padding, dilation 1
            and one group.

    Raises:
        ValueError: ``layer`` is not such a transposed convolution.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not self.supports(layer):
            raise ValueError(f"layer must be a non-overlapping transposed convolution (kernel == stride), got {layer}.")
        self.stride = tuple(layer.stride)
        self.out_channels = layer.out_channels
        dims = len(self.stride)
        c_in, c_out = layer.weight.shape[:2]
        # (C_in, C_out, *k) -> (C_out * prod(k), C_in, 1, ...): output channel index is (c_out, k1, k2, ...)
        weight = layer.weight.detach().permute(1, *range(2, 2 + dims), 0).reshape(-1, c_in, *([1] * dims))
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        bias = None if layer.bias is None else layer.bias.detach().repeat_interleave(math.prod(self.stride))
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self._conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]

    @staticmethod
    def supports(layer: nn.Module) -> bool:
        """Whether ``layer`` is a transposed convolution this class computes exactly."""
        return (
            isinstance(layer, _CONV_T)
            and tuple(layer.kernel_size) == tuple(layer.stride)
            and not any(layer.padding)
            and not any(layer.output_padding)
            and all(d == 1 for d in layer.dilation)
            and layer.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *n)`` to ``(B, C_out, *(n * stride))``."""
        dims = len(self.stride)
        y = self._conv(x, self.weight, self.bias)
        b, n = y.shape[0], y.shape[2:]
        y = y.reshape(b, self.out_channels, *self.stride, *n)  # a copy only when y is channels-last
        # (B, C, k1.., n1..) -> (B, C, n1, k1, n2, k2, ...)
        order = [0, 1] + [i for d in range(dims) for i in (2 + dims + d, 2 + d)]
        return y.permute(order).reshape(b, self.out_channels, *(s * m for s, m in zip(self.stride, n)))


def _replace_transposed(network: nn.Module) -> int:
    replaced = 0
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if VoxelShuffleConvTranspose.supports(child):
                setattr(module, name, VoxelShuffleConvTranspose(child))
                replaced += 1
    return replaced


def use_channels_last(network: nn.Module) -> int:
    """Store every 2D and 3D convolution weight in channels-last layout, in place; return how many.

    The function is unchanged: a convolution whose weight is channels-last produces a channels-last output from any
    input, and every other operation follows the layout of its input.
    """
    changed = 0
    for p in network.parameters():
        if p.dim() in (4, 5):
            p.data = p.data.contiguous(memory_format=torch.channels_last if p.dim() == 4 else torch.channels_last_3d)
            changed += 1
    return changed


def _has_attention(network: nn.Module) -> bool:
    return any(isinstance(m, (SABlock, nn.MultiheadAttention)) for m in network.modules())


def optimize_for_inference(
    network: nn.Module, fuse_attention: bool = True, channels_last: bool | None = None
) -> nn.Module:
    """An eval-mode copy of ``network`` with the rewrites of this module applied and gradients off.

    Args:
        network: a trained network (any ``nn.Module``; parts that no rewrite matches run as they are). A TorchScript
            module is returned as it is, in eval mode.
        fuse_attention: switch MONAI attention blocks to the fused kernel.
        channels_last: convolution weights in channels-last layout (default: on the CPU, for networks without
            attention blocks; measured in ``medssl bench speed``).

    Returns:
        the rewritten copy, on the device of ``network``; ``network`` itself is unchanged.

    Example::

        fast = optimize_for_inference(net)
        with torch.inference_mode():
            logits = SlidingWindowInferer((96, 96, 96), sw_batch_size=4)(image, fast)
    """
    if isinstance(network, torch.jit.ScriptModule):  # compiled already: its graph cannot be rewritten module-wise
        return network.eval()
    fast = copy.deepcopy(network).eval()
    fold_batch_norm(fast)
    if fuse_attention:
        use_fused_attention(fast)
    _replace_transposed(fast)
    if channels_last is None:
        device = next(fast.parameters(), torch.empty(0)).device
        channels_last = device.type == "cpu" and not _has_attention(fast)
    if channels_last:
        use_channels_last(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast
