"""Loading a bundle for inference from a checkpoint or from the TorchScript model ``ckpt_export`` writes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medssl.errors import DataError
from medssl.workflows.bundle import is_torchscript, load_bundle_inference
from medssl.inference.optimize import optimize_for_inference

LUNG = Path(__file__).resolve().parents[2] / "bundles" / "lung_vessel_ct_ssl_segmentation"
SMALL = {"network_def#channels": [4, 8, 16, 32, 64]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    parser = ConfigParser()
    parser.read_config(str(LUNG / "configs" / "inference.json"))
    for key, value in SMALL.items():
        parser[key] = value
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    torch.save({"model": network.state_dict()}, root / "model_best.pt")
    torch.jit.script(network).save(str(root / "model.ts"))
    return network, root / "model_best.pt", root / "model.ts"


def test_torchscript_and_checkpoint_give_the_same_network(weights):
    network, checkpoint, script = weights
    assert is_torchscript(script) and not is_torchscript(checkpoint) and not is_torchscript(script.parent / "absent")
    eager = load_bundle_inference(LUNG, checkpoint=checkpoint, device="cpu", overrides=SMALL)
    scripted = load_bundle_inference(LUNG, checkpoint=script, device="cpu", overrides=SMALL)
    assert isinstance(scripted.network, torch.jit.ScriptModule) and not scripted.network.training
    assert optimize_for_inference(scripted.network) is scripted.network  # compiled models run as they are
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = network(x)
        torch.testing.assert_close(eager.network(x), expected)
        torch.testing.assert_close(scripted.network(x), expected)


def test_broken_torchscript_names_the_file(weights, tmp_path):
    _, _, script = weights
    broken = tmp_path / "model.ts"
    with zipfile.ZipFile(script) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if not name.endswith("data.pkl"):  # drop the pickled module: the archive still looks like TorchScript
                dst.writestr(name, src.read(name))
    assert is_torchscript(broken)
    with pytest.raises(DataError, match="TorchScript model cannot be loaded") as e:
        load_bundle_inference(LUNG, checkpoint=broken, device="cpu", overrides=SMALL)
    assert str(broken) in str(e.value)
