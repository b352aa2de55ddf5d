"""The one registry of methods: ``medssl methods``, adding a method as one entry, a bundle's method block (renamed
settings name their new spelling), the Bayesian pseudo-labels' defaults (the authors' released configurations), and a
method's checkpointed state, keyed by each piece's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

import medssl.methods as methods
from medssl.cli import main
from medssl.handlers.ema_teacher import EMATeacher
from medssl.handlers.learned_threshold import LearnedThreshold
from medssl.handlers.pseudo_label import PseudoLabelHandler
from medssl.handlers.weak_strong import WeakToStrongHandler
from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule
from medssl.methods import READS, REGISTRY, VARIANTS, Method, SSLMethod, build_method, register, resolve_settings
from medssl.networks import ThresholdHead

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def test_methods_command_prints_one_method_a_line_name_first(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[: len(REGISTRY)]] == list(REGISTRY)
    for line, method in zip(lines, REGISTRY.values()):
        assert f"reads: {method.reads};" in line and f"[{method.paper}]" in line
        settings = line.split("settings: ", 1)[1]
        assert settings == ", ".join(f"{k}={v!r}" for k, v in method.defaults.items())
    assert lines[len(REGISTRY)].startswith("variants: ") and len(lines) == len(REGISTRY) + 1
    assert all(f"{name} = {m}" in lines[-1] for name, (m, _) in VARIANTS.items() if name != m)


def _toy_build(settings, context):
    return SSLMethod("toy", settings, READS[1])


def test_a_method_is_one_entry(monkeypatch, capsys):
    """Registering an entry is all it takes: it builds, its variants resolve, it is listed; nothing else changes."""
    monkeypatch.setattr(methods, "REGISTRY", dict(REGISTRY))
    monkeypatch.setattr(methods, "VARIANTS", dict(VARIANTS))
    toy = Method("toy", READS[1], "A. Author, 2026", {"max_weight": 1.0, "strength": 0.5}, _toy_build, "a toy")
    register(toy, variants={"toy": {}, "toy_strong": {"strength": 0.9}})
    built = build_method("toy", {"strength": 0.7, "prior_mu": 0.9})  # prior_mu: another method's, ignored
    assert built.settings == {"max_weight": 1.0, "strength": 0.7} and built.uses_unlabeled
    assert methods.variant("toy_strong") == ("toy", {"strength": 0.9})
    assert methods.uses_unlabeled("toy") and not methods.reads_pseudo_labels("toy") and methods.strong_views("toy") == 0
    assert main(["methods"]) == 0
    assert any(line.startswith("toy ") and "strength=0.5" in line for line in capsys.readouterr().out.splitlines())
    with pytest.raises(ValueError, match="already registered"):
        register(toy)
    with pytest.raises(ValueError, match="'toy_bad' sets \\['strenght'\\]"):
        register(Method("toy2", READS[1], "-", {"strength": 0.5}, _toy_build, "-"), {"toy_bad": {"strenght": 1}})


def test_method_block_overrides_defaults_and_names_a_typo():
    assert resolve_settings("segpl", {"threshold": 0.7, "xi": 1.0})["threshold"] == 0.7  # xi: VAT's, ignored
    assert "xi" not in resolve_settings("segpl", {"xi": 1.0})
    with pytest.raises(ValueError, match="'treshold'"):
        resolve_settings("segpl", {"treshold": 0.7})
    with pytest.raises(ValueError, match="ssl_method"):
        resolve_settings("segpl_typo")


def test_bayesian_defaults_follow_the_authors_configurations():
    """Temperature 1, 256 threshold draws averaged, the unsupervised loss from 40% to 50% of the run; the prior per
    task in each bundle: 0.5 / 0.1 for brain tumour (and ACDC), 0.9 / 0.1 for vessels (the authors' airways)."""
    bpl = REGISTRY["bpl"].defaults
    assert (bpl["temperature"], bpl["samples"], bpl["warmup"], bpl["ramp"]) == (1.0, 256, 0.4, 0.1)
    assert REGISTRY["segpl"].defaults["temperature"] == 1.0 and REGISTRY["fixmatch"].defaults["temperature"] == 1.0
    priors = {}
    for train in sorted(BUNDLES.glob("*/configs/train.json")):
        config = json.loads(train.read_text())
        assert "temperature" not in config.get("method", {}), train  # no bundle heats the cut
        priors[train.parents[1].name] = (config["method"]["prior_mu"], config["method"]["prior_std"])
    assert priors == {
        "acdc_mri_ssl_segmentation": (0.5, 0.1),
        "brats_mri_axial_slices_ssl_segmentation": (0.5, 0.1),
        "brats_mri_transbts_ssl_segmentation": (0.5, 0.1),
        "la_mri_ssl_segmentation": (0.5, 0.1),
        "lung_vessel_ct_ssl_segmentation": (0.9, 0.1),
    }


@pytest.mark.parametrize("name, handler_type", [("bpl", PseudoLabelHandler), ("fixmatch", WeakToStrongHandler)])
def test_the_threshold_is_fitted_at_the_temperature_it_cuts_at(name, handler_type):
    """A temperature set in the method block reaches both the learned threshold's fit on labelled images and the
    cut of the pseudo-labels: a cut learned at one temperature and applied at another is the divergence of paper 000's
    bundles this fixes."""
    net = UNet(3, 1, 1, channels=(4, 8, 16), strides=(2, 2))
    head = ThresholdHead(3, in_channels=8)
    for block, expected in (({}, 1.0), ({"temperature": 2.0}, 2.0)):
        block = {**block, "cut": "learned"} if name == "fixmatch" else block
        built = build_method(name, block, network=net, head=head, feature_layer="model.1")
        handler = next(h for h in built.handlers if isinstance(h, handler_type))
        assert isinstance(handler.threshold, LearnedThreshold)
        assert handler.temperature == handler.threshold.temperature == expected


@pytest.mark.parametrize("old, new", [("threshold_mode", "cut"), ("mode", "threshold_fit")])
def test_a_renamed_setting_names_its_new_spelling(old, new):
    """One name per idea: the method's cut is ``cut``, what trains the learned threshold ``threshold_fit``; the old
    spellings of a method block are errors that say what to write instead. The variants keep their names."""
    with pytest.raises(ValueError, match=f"method setting '{old}' was renamed '{new}'"):
        resolve_settings("fixmatch", {old: "learned"})
    assert methods.variant("fixmatch_learned") == ("fixmatch", {"cut": "learned"})
    assert methods.variant("fixmatch_sat") == ("fixmatch", {"cut": "adaptive"})
    cuts = [build_method(n).settings["threshold"] for n in ("fixmatch_t05", "fixmatch_t08", "fixmatch")]
    assert cuts == [0.5, 0.8, 0.95]  # the sweep of fixed cuts the learned one is judged against
    assert methods.variant("bpl_kl_only") == ("bpl", {"threshold_fit": "kl_only"})
    assert not any(set(settings) & set(methods.RENAMED_SETTINGS) for _, settings in VARIANTS.values())
    assert not any(set(m.defaults) & set(methods.RENAMED_SETTINGS) for m in REGISTRY.values())


def _segpl_ema():
    torch.manual_seed(0)
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    return build_method("segpl", {"source": "teacher"}, network=net)


def _set_apart(built):
    """Move each stateful piece off its start, so a piece loaded with another's state (or none) shows."""
    schedule = next(h for h in built.handlers if isinstance(h, UnsupervisedWeightSchedule))
    teacher = next(h for h in built.handlers if isinstance(h, EMATeacher))
    schedule.started_at, schedule._best, schedule._stale = 3.0, 0.5, 2
    with torch.no_grad():
        for p in teacher.teacher.parameters():
            p.add_(1.0)
    return schedule, teacher


def _assert_restored(built, schedule, teacher):
    loaded_schedule = next(h for h in built.handlers if isinstance(h, UnsupervisedWeightSchedule))
    loaded_teacher = next(h for h in built.handlers if isinstance(h, EMATeacher))
    assert (loaded_schedule.started_at, loaded_schedule._best, loaded_schedule._stale) == (3.0, 0.5, 2)
    assert all(torch.equal(a, b) for a, b in zip(loaded_teacher.teacher.parameters(), teacher.teacher.parameters()))


def test_method_state_is_keyed_by_name_and_resumes_after_the_handlers_are_reordered():
    built = _segpl_ema()
    schedule, teacher = _set_apart(built)
    state = built.state_dict()
    assert set(state) == {"weight_schedule", "ema_teacher", "fixed_threshold"}
    resumed = _segpl_ema()
    resumed.handlers.reverse()  # a builder that orders its handlers otherwise
    resumed.load_state_dict(state)
    _assert_restored(resumed, schedule, teacher)


def test_a_checkpoint_keyed_by_position_still_resumes():
    """Checkpoints written before the keys were names hold ``handler{i}`` / ``threshold{i}``: they load by position
    (the cuts that keep no state had no entry)."""
    built = _segpl_ema()
    schedule, teacher = _set_apart(built)
    named = built.state_dict()
    old = {"handler0": named["weight_schedule"], "handler1": named["ema_teacher"]}
    assert [type(h) for h in built.handlers[:2]] == [UnsupervisedWeightSchedule, EMATeacher]
    resumed = _segpl_ema()
    resumed.load_state_dict(old)
    _assert_restored(resumed, schedule, teacher)
    sat = build_method("fixmatch", {"cut": "adaptive"})
    handler = next(h for h in sat.handlers if isinstance(h, WeakToStrongHandler))
    averages = {"global_threshold": torch.tensor([0.7], dtype=torch.float64),
                "class_means": torch.tensor([0.9, 0.1], dtype=torch.float64)}  # fmt: skip
    sat.load_state_dict({"handler0": named["weight_schedule"], "threshold1": averages})
    assert float(handler.threshold.global_threshold) == 0.7


def test_a_missing_or_shared_name_is_an_error():
    built = _segpl_ema()
    with pytest.raises(KeyError, match="no entry 'ema_teacher'.*its entries: \\['weight_schedule'\\]"):
        built.load_state_dict({"weight_schedule": built.state_dict()["weight_schedule"]})
    twice = SSLMethod("toy", {}, READS[1], [UnsupervisedWeightSchedule(), UnsupervisedWeightSchedule()])
    with pytest.raises(ValueError, match="two pieces with state named 'weight_schedule'"):
        twice.state_dict()


def test_weak_to_strong_takes_the_ema_teacher_as_its_source():
    """A composition, not new code: FixMatch (cut 0.5) with the EMA teacher's pseudo-labels attaches the teacher
    before the weak-to-strong handler, which reads ``TEACHER_PRED``."""
    from medssl.handlers.weak_strong import WeakToStrongHandler

    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,))
    built = build_method("fixmatch_t05_ema", network=net, run_length=10, unit="iterations")
    kinds = [type(h) for h in built.handlers]
    assert kinds.index(EMATeacher) < kinds.index(WeakToStrongHandler)
    handler = built.handlers[kinds.index(WeakToStrongHandler)]
    assert handler.source == "teacher" and built.settings["threshold"] == 0.5
    plain = build_method("fixmatch_t05", network=net, run_length=10, unit="iterations")
    assert EMATeacher not in [type(h) for h in plain.handlers]


@pytest.mark.parametrize("loss", ["dice_ce", "ce", "gce", "bce", "sce"])
def test_weak_to_strong_takes_a_robust_loss_on_its_pseudo_labels(loss):
    """FixMatch's loss on the strong view's pseudo-labels: Dice + CE (the default), CE alone, or paper 001's robust
    losses with their parameters; CE and GCE checked against the formulas on the kept pixels."""
    from medssl.losses.robust import BetaCrossEntropyLoss, GeneralizedCrossEntropyLoss, SymmetricCrossEntropyLoss
    from medssl.losses.semi_supervised import MaskedDiceCELoss

    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,))
    name = "fixmatch_t05" if loss == "dice_ce" else f"fixmatch_t05_{loss}"
    built = build_method(name, {"q": 0.4}, network=net, run_length=10, unit="iterations")
    assert built.settings["threshold"] == 0.5 and built.settings["unsup_loss"] == loss
    kind = {"gce": GeneralizedCrossEntropyLoss, "bce": BetaCrossEntropyLoss, "sce": SymmetricCrossEntropyLoss}
    assert isinstance(built.unsup_loss, kind.get(loss, MaskedDiceCELoss))
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 1, 6, 6))
    mask = (torch.rand(2, 1, 6, 6) > 0.4).float()
    p_y = torch.softmax(logits, 1).gather(1, target)[mask.bool()]
    value = built.unsup_loss(logits, target, mask=mask)
    if loss == "ce":
        assert float(value) == pytest.approx(float(-p_y.log().mean()), rel=1e-5)
    if loss == "gce":  # (1 - p_y^q) / q with the q given
        assert float(value) == pytest.approx(float(((1 - p_y**0.4) / 0.4).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="unsup_loss must be one of"):
        build_method("fixmatch", {"unsup_loss": "mse"}, network=net, run_length=10, unit="iterations")
