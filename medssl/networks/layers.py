"""Names of a network's layers that methods hook: the encoder's feature maps (UniMatch's feature perturbation)."""

from __future__ import annotations

import re

from torch import nn

__all__ = ["encoder_feature_layers"]

# MONAI's UNet nests each level as Sequential(down, SkipConnection(Sequential(...)), up): the downsampling blocks are
# "model.0", "model.1.submodule.0", "model.1.submodule.1.submodule.0", ...
_UNET_DOWN = re.compile(r"^model(\.1\.submodule)*\.0$")


def encoder_feature_layers(network: nn.Module) -> list[str]:
    """The modules whose outputs are the encoder's feature maps: every downsampling block of MONAI's ``UNet``, the
    bottleneck feature map of medssl's ``TransBTS``.

    Raises:
        ValueError: a network of another kind (name the layers explicitly then).
    """
    network = getattr(network, "module", network)
    names = [name for name, _ in network.named_modules()]
    if type(network).__name__ == "TransBTS":
        return ["feature_mapping"]
    down = [n for n in names if _UNET_DOWN.match(n)]
    if type(network).__name__ == "UNet" and down:
        return down
    raise ValueError(f"no known encoder layers for {type(network).__name__}: give the layer names explicitly")
