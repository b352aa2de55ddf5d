"""Flags as the bundle CLI passes them: ``python -m monai.bundle run ... --amp false`` gives the string "false", which
Python reads as true; every flag medssl reads goes through :func:`medssl.checks.check_bool`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from medssl.checks import check_bool
from medssl.handlers.checkpoint import resume_handlers
from medssl.inference.predict import binary_label_map
from medssl.methods import resolve_settings
from medssl.workflows.evaluation import build_evaluator


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), ("true", True), ("false", False), ("True", True), (" FALSE ", False), (1, True),
     (0, False), (np.bool_(True), True), ("no", False), ("yes", True)],  # fmt: skip
)
def test_check_bool_reads_the_clis_words(value, expected):
    assert check_bool("amp", value) is expected


@pytest.mark.parametrize("value", ["0.5", 2, None, "yes please", ""])
def test_check_bool_refuses_anything_else_naming_the_setting(value):
    with pytest.raises(ValueError, match="largest_component must be true or false"):
        check_bool("largest_component", value)


def test_false_as_a_word_turns_the_flags_off(tmp_path):
    """``--resume false``, ``--amp false``, ``--largest_component false`` and ``--method#largest_component false``
    each turn their setting off (they all turned it on while the string was read as a truth value)."""
    (tmp_path / "model_last.pt").write_bytes(b"")
    assert resume_handlers("false", tmp_path / "model_last.pt", {}) == []
    assert len(resume_handlers("true", tmp_path / "model_last.pt", {"network": torch.nn.Linear(1, 1)})) == 1
    net = UNet(3, 1, 1, channels=(4, 8), strides=(2,))
    evaluator = build_evaluator([], net, (16, 16, 16), task="binary", device="cpu", amp="false",
                                largest_component="false")  # fmt: skip
    assert evaluator.amp is False
    assert len(binary_label_map(largest_component="false").transforms) == 2
    assert len(binary_label_map(largest_component="true").transforms) == 3
    assert resolve_settings("bcp", {"largest_component": "false"})["largest_component"] is False
    assert resolve_settings("bcp", {"largest_component": "true"})["largest_component"] is True
