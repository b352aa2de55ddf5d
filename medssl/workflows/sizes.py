"""The networks and patch sizes that the demo and the benchmarks train and time, written out once.

Two networks, each at several sizes: the lung-vessel (and LA) bundles' MONAI UNet and the BraTS bundles' TransBTS. A
size is what a bundle's ``train.json`` takes as overrides (:meth:`RunSize.overrides`, for the demo and the accuracy
presets) and what the speed benchmark builds directly (:meth:`LungUNet.build`, :meth:`TransBTSSize.build`).
:data:`LUNG_BUNDLE` and :data:`BRATS_BUNDLE` are the bundles' own networks (their ``network_def``), :data:`LA_CPU`
the LA bundle's with the LA track's CPU-protocol settings; medssl never imports ``bundles/``, and
tests/bench/test_speed.py checks these against the bundles' configs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "LungUNet",
    "TransBTSSize",
    "RunSize",
    "LUNG_BUNDLE",
    "LUNG_ROI",
    "LUNG_FEATURE_LAYER",
    "BRATS_BUNDLE",
    "BRATS_ROI",
    "LA_CPU",
    "DEMO_LUNG",
    "SMALL_LUNG",
    "SMALL_BRATS2D",
    "lung_network",
    "la_network",
    "brats_network",
]


@dataclass(frozen=True)
class LungUNet:
    """The lung-vessel bundle's network, MONAI UNet 1 -> 1 channel with batch norm, at a size (the LA bundle's is the
    same UNet with instance norm)."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int
    #: channels of the feature layer the threshold head reads (the bundle's ``feature_channels``)
    feature_channels: int = 32
    norm: str = "batch"

    def overrides(self) -> dict[str, Any]:
        """The bundle settings of this size."""
        return {
            "network_def#channels": list(self.channels),
            "network_def#strides": list(self.strides),
            "network_def#num_res_units": self.num_res_units,
            "feature_channels": self.feature_channels,
        }

    def build(self) -> nn.Module:
        """The network itself (3D)."""
        from monai.networks.nets import UNet

        return UNet(3, 1, 1, channels=self.channels, strides=self.strides, num_res_units=self.num_res_units,
                    norm=self.norm)  # fmt: skip


@dataclass(frozen=True)
class TransBTSSize:
    """The BraTS bundles' network, TransBTS 4 -> 4 channels, at a size."""

    channels: tuple[int, ...]
    embed_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int

    def overrides(self) -> dict[str, Any]:
        """The bundle settings of this size."""
        return {
            "network_channels": list(self.channels),
            "embed_dim": self.embed_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
        }

    def build(self, roi_size: Sequence[int]) -> nn.Module:
        """The network built for windows of ``roi_size`` (2D or 3D, as many dimensions as ``roi_size``)."""
        from medssl.networks import TransBTS

        return TransBTS(
            len(roi_size), 4, 4, img_size=list(roi_size), channels=self.channels, embed_dim=self.embed_dim,
            num_layers=self.num_layers, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        )  # fmt: skip


@dataclass(frozen=True)
class RunSize:
    """A network size with the patch, batch and learning rate it trains with: bundle overrides for a short run."""

    network: LungUNet | TransBTSSize
    roi_size: tuple[int, ...]
    #: labelled and unlabelled images per batch (the same number of each)
    batch_size: int
    num_samples: int
    sw_batch_size: int
    learning_rate: float = 0.003
    extra: Mapping[str, Any] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """The bundle settings of this size."""
        return {
            "roi_size": list(self.roi_size),
            **self.network.overrides(),
            "batch_size": self.batch_size,
            "unlabeled_batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "learning_rate": self.learning_rate,
            "sw_batch_size": self.sw_batch_size,
            **dict(self.extra),
        }


# The bundles' own networks (configs/train.json "network_def") and patch sizes.
LUNG_BUNDLE = LungUNet((16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
LUNG_ROI = (96, 96, 96)
LUNG_FEATURE_LAYER = "model.1"
BRATS_BUNDLE = TransBTSSize((16, 32, 64, 128), embed_dim=512, num_layers=4, num_heads=8, mlp_dim=4096)
BRATS_ROI = (128, 128, 128)
#: The LA track's CPU-protocol network (medssl.bench.tracks, whose protocol also holds its patch and batch sizes): the
#: LA bundle's UNet without residual units.
LA_CPU = LungUNet((16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=0, norm="instance")

#: ``medssl demo``: the lung-vessel bundle at a size that trains in minutes on a CPU: 48^3 patches, a 4-level UNet.
DEMO_LUNG = RunSize(LungUNet((16, 32, 64, 128), (2, 2, 2), num_res_units=1), (48, 48, 48), batch_size=2,
                    num_samples=2, sw_batch_size=4)  # fmt: skip
#: The accuracy benchmark's ``small`` preset: a 3-level UNet on 32^3 patches ...
SMALL_LUNG = RunSize(LungUNet((16, 32, 64), (2, 2), num_res_units=1), (32, 32, 32), batch_size=2, num_samples=1,
                     sw_batch_size=8)  # fmt: skip
#: ... and a small TransBTS on 48^2 slices (validation picks the best checkpoint by Dice; HD95 would double its cost).
SMALL_BRATS2D = RunSize(TransBTSSize((8, 16, 32, 64), embed_dim=64, num_layers=1, num_heads=4, mlp_dim=128), (48, 48),
                        batch_size=4, num_samples=1, sw_batch_size=8, extra={"val_hd95": False})  # fmt: skip


def lung_network() -> nn.Module:
    """The lung-vessel CT bundle's network: MONAI UNet, 1 -> 1 channel, 16-256 channels, 2 residual units."""
    return LUNG_BUNDLE.build()


def la_network(channels: Sequence[int] = LA_CPU.channels) -> nn.Module:
    """The LA track's CPU-protocol network (:data:`LA_CPU`), or the same UNet with other ``channels`` (tiny tests)."""
    size = LA_CPU if tuple(channels) == LA_CPU.channels else LungUNet(
        tuple(channels), LA_CPU.strides[: len(channels) - 1], num_res_units=0, feature_channels=2 * channels[0],
        norm="instance",
    )  # fmt: skip
    return size.build()


def brats_network(roi_size: Sequence[int] = BRATS_ROI) -> nn.Module:
    """The 3D BraTS bundle's network: TransBTS, 4 -> 4 channels, built for windows of ``roi_size``."""
    return BRATS_BUNDLE.build(roi_size)
