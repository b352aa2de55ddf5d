"""The pieces of the new methods, each by the property that defines it: the EMA formula, the box composition of a
mixed label, weak-to-strong pseudo-labels, VAT's adversarial direction, the learned threshold, the gates."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.networks.nets import UNet

from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers.copy_paste import CopyPasteHandler
from medssl.handlers.ema_teacher import EMATeacher, ema_update
from medssl.handlers.gate import LabelledForegroundGate, PseudoLabelGate
from medssl.handlers.learned_threshold import LearnedThreshold
from medssl.handlers.pseudo_label import BayesianPseudoLabelHandler, SegPLHandler
from medssl.handlers.vat import prediction_kl, vat_direction
from medssl.handlers.weak_strong import STRONG_KEYS, WeakToStrongHandler
from medssl.handlers.threshold import FixedThreshold
from medssl.handlers.weight_schedule import UnsupervisedWeightSchedule
from medssl.networks import ThresholdHead
from medssl.transforms.mixing import box_mask, box_mix
from medssl.transforms.thresholding import confident_pseudo_labels, hard_pseudo_labels


def _engine(network=None, **state):
    engine = Engine(lambda e, b: e.state.output)
    engine.register_events(*IterationEvents)
    engine.register_events(*SSLEvents)
    engine.state.output = {}
    engine.state.device = torch.device("cpu")
    engine.network = network
    engine.inferer = lambda x, net: net(x)
    if network is not None:
        engine.optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    for k, v in state.items():
        setattr(engine.state, k, v)
    return engine


def test_ema_update_follows_the_formula():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, alpha=0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)


def test_ema_teacher_warms_up_its_decay_and_predicts_without_gradient():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)
    engine = _engine(net, iteration=1)
    handler = EMATeacher(net, decay=0.99)
    handler.attach(engine)
    with torch.no_grad():
        net.weight.add_(1.0)  # the student moves
    start = handler.teacher.weight.detach().clone()
    engine.fire_event(IterationEvents.MODEL_COMPLETED)  # step 1: a = min(1 - 1/2, 0.99) = 0.5
    assert torch.allclose(handler.teacher.weight, 0.5 * start + 0.5 * net.weight)
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: torch.randn(2, 1, 4, 4)}
    engine.fire_event(SSLEvents.INPUTS_READY)
    pred = engine.state.output[SSLKeys.TEACHER_PRED]
    assert pred.shape == (2, 2, 4, 4) and not pred.requires_grad
    state = handler.state_dict()
    other = EMATeacher(torch.nn.Conv2d(1, 2, 1))
    other.load_state_dict(state)
    assert torch.equal(other.teacher.weight, handler.teacher.weight)


def test_copy_paste_label_is_the_box_composition_of_its_sources():
    torch.manual_seed(0)
    x, u = torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)
    y = torch.full((4, 1, 8, 8), 2.0)  # labelled: class 2 everywhere
    teacher = torch.zeros(4, 3, 8, 8)
    teacher[:, 1] = 5.0  # the teacher says class 1 everywhere
    engine = _engine(unsup_weight=1.0)
    engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: y, SSLKeys.UNLABELED_IMAGE: u, SSLKeys.TEACHER_PRED: teacher}
    handler = CopyPasteHandler(side_ratio=0.5, alpha=0.5)
    handler.attach(engine)
    torch.manual_seed(1)
    engine.fire_event(SSLEvents.INPUTS_READY)
    out = engine.state.output
    image, label = out[SSLKeys.IMAGE], out[SSLKeys.LABEL]
    box = image[:2] == 0  # first half: unlabelled (1) outside, labelled (0) pasted inside
    assert box.float().mean() == pytest.approx(0.25)  # a box of half of each side
    assert torch.equal(label[:2][box], torch.full_like(label[:2][box], 2.0))  # labelled label in the box
    assert torch.equal(label[:2][~box], torch.full_like(label[:2][~box], 1.0))  # teacher's pseudo-label outside
    inside = image[2:] == 1  # second half: labelled outside, unlabelled pasted inside
    assert torch.equal(label[2:][inside], torch.full_like(label[2:][inside], 1.0))
    assert torch.equal(label[2:][~inside], torch.full_like(label[2:][~inside], 2.0))
    assert out[SSLKeys.UNLABELED_IMAGE] is None
    out[SSLKeys.PRED] = torch.randn(4, 3, 8, 8)
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    assert out[SSLKeys.SUPERVISED_WEIGHT] == 0.0 and out[SSLKeys.LOSS_TERMS]["copy_paste"] > 0


@pytest.mark.parametrize("labelled_mix", [False, True])
def test_copy_paste_pretraining_is_supervised_only(labelled_mix):
    """Pre-training reads no unlabelled image; with BCP's labelled copy-paste it trains on labelled images pasted
    into each other (``a`` outside, ``b`` inside the box), half as many as the labelled batch, labels mixed alike."""
    engine = _engine(unsup_weight=0.0)
    x = torch.cat([torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)])  # halves a (0) and b (1)
    y = torch.cat([torch.full((2, 1, 8, 8), 2.0), torch.full((2, 1, 8, 8), 3.0)])
    engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: y, SSLKeys.UNLABELED_IMAGE: torch.ones(4, 1, 8, 8)}
    CopyPasteHandler(side_ratio=0.5, labelled_mix=labelled_mix).attach(engine)
    engine.fire_event(SSLEvents.INPUTS_READY)
    out = engine.state.output
    assert out[SSLKeys.UNLABELED_IMAGE] is None
    if not labelled_mix:
        assert out[SSLKeys.IMAGE] is x and out[SSLKeys.LABEL] is y
        return
    image, label = out[SSLKeys.IMAGE], out[SSLKeys.LABEL]
    assert image.shape == label.shape == (2, 1, 8, 8)
    inside = image == 1  # b pasted into a: a box of half of each side
    assert inside.float().mean() == pytest.approx(0.25)
    assert torch.equal(label[inside], torch.full_like(label[inside], 3.0))
    assert torch.equal(label[~inside], torch.full_like(label[~inside], 2.0))
    engine.state.output = {SSLKeys.IMAGE: x[:1], SSLKeys.LABEL: y[:1], SSLKeys.UNLABELED_IMAGE: None}
    engine.fire_event(SSLEvents.INPUTS_READY)  # one labelled image: nothing to paste, trained as it is
    assert engine.state.output[SSLKeys.IMAGE].shape[0] == 1


def test_copy_paste_cuts_a_short_last_batch_to_even_pairs():
    engine = _engine(unsup_weight=1.0)
    CopyPasteHandler().attach(engine)
    x, y = torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)
    engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: y, SSLKeys.UNLABELED_IMAGE: torch.ones(1, 1, 4, 4),
                           SSLKeys.TEACHER_PRED: torch.zeros(1, 2, 4, 4)}  # fmt: skip
    engine.fire_event(SSLEvents.INPUTS_READY)  # no pair: supervised only
    assert engine.state.output[SSLKeys.UNLABELED_IMAGE] is None and engine.state.output[SSLKeys.IMAGE] is x
    engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: y, SSLKeys.UNLABELED_IMAGE: torch.ones(2, 1, 4, 4),
                           SSLKeys.TEACHER_PRED: torch.zeros(2, 2, 4, 4)}  # fmt: skip
    engine.fire_event(SSLEvents.INPUTS_READY)  # one pair of halves: 2 mixed images
    out = engine.state.output
    assert out[SSLKeys.IMAGE].shape[0] == out[SSLKeys.LABEL].shape[0] == 2 and 0 < float(out[SSLKeys.IMAGE].mean()) < 1


def test_box_mix_of_masks():
    mask = box_mask(3, (10, 12), side_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert mask.sum(dim=(1, 2, 3)).tolist() == [30.0, 30.0, 30.0]
    a, b = torch.zeros(3, 2, 10, 12), torch.ones(3, 2, 10, 12)
    assert torch.equal(box_mix(a, b, mask), mask.expand(3, 2, 10, 12))


def test_weak_to_strong_pseudo_labels_come_from_the_weak_view():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1)
    weak = torch.rand(2, 1, 8, 8)
    strong = weak * 0.5 + 0.3  # a strong view: other intensities, same pixels
    engine = _engine(net, unsup_weight=1.0)
    engine.unsup_loss_function = __import__("medssl.losses", fromlist=["MaskedDiceCELoss"]).MaskedDiceCELoss()
    engine.state.unlabeled_batch = {"image": weak, STRONG_KEYS[0]: strong}
    handler = WeakToStrongHandler(FixedThreshold(0.4), views=1, cutmix_prob=0.0)
    handler.attach(engine)
    weak_logits = net(weak)
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: weak, SSLKeys.UNLABELED_PRED: weak_logits}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    out = engine.state.output
    expected, mask = confident_pseudo_labels(weak_logits, 0.4)
    assert torch.equal(out[SSLKeys.PSEUDO_LABEL], expected) and torch.equal(out[SSLKeys.PSEUDO_MASK], mask)
    assert torch.allclose(out[SSLKeys.UNLABELED_PRED], net(strong))  # the loss is on the strong view
    assert not torch.allclose(out[SSLKeys.UNLABELED_PRED], weak_logits)
    assert out[SSLKeys.UNLABELED_PRED].requires_grad and not out[SSLKeys.PSEUDO_LABEL].requires_grad


def test_unimatch_adds_a_second_view_and_the_feature_perturbation_stream():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)
    weak = torch.rand(2, 1, 8, 8)
    engine = _engine(net, unsup_weight=0.25)
    engine.unsup_loss_function = __import__("medssl.losses", fromlist=["MaskedDiceCELoss"]).MaskedDiceCELoss()
    engine.state.unlabeled_batch = {"image": weak, STRONG_KEYS[0]: weak + 0.1, STRONG_KEYS[1]: weak - 0.1}
    handler = WeakToStrongHandler(FixedThreshold(0.01), views=2, perturb_layers=["model.0"])
    handler.attach(engine)
    net.train()
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: weak, SSLKeys.UNLABELED_PRED: net(weak)}
    batches = []
    hook = net.register_forward_hook(lambda module, inputs, output: batches.append(inputs[0].shape[0]))
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    hook.remove()
    assert batches == [4, 2]  # the two strong views in one pass (as UniMatch's code), then the perturbed weak one
    terms = engine.state.output[SSLKeys.LOSS_TERMS]
    assert set(terms) >= {"strong2", "feature_perturbation"} and all(float(t) > 0 for t in terms.values())
    with torch.no_grad():  # the dropout only acts in the perturbed pass
        assert torch.equal(net(weak), net(weak))


@pytest.mark.parametrize("fp_pass", ["shared", "separate"])
def test_unimatch_feature_perturbation_decodes_the_joint_passs_encoder_features(fp_pass):
    """``shared`` (UniMatch's code): the stream's encoder blocks do not compute again, it decodes their outputs of
    the trainer's joint pass, and its loss trains the encoder through them. Without dropout both passes predict what
    the weak pass predicted (instance norm: per image)."""
    from medssl.networks.layers import encoder_feature_layers

    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    layers = encoder_feature_layers(net)
    x, weak = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    engine = _engine(net, unsup_weight=1.0)
    seen = []
    engine.unsup_loss_function = lambda pred, pseudo, mask=None: seen.append(pred) or pred.mean()
    engine.state.unlabeled_batch = {"image": weak, STRONG_KEYS[0]: weak + 0.1, STRONG_KEYS[1]: weak - 0.1}
    handler = WeakToStrongHandler(FixedThreshold(0.01), views=2, perturb_layers=layers, dropout=0.0, fp_pass=fp_pass)
    handler.attach(engine)
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    joint = net(torch.cat([x, weak]))  # the trainer's joint pass: labelled first, unlabelled last
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: weak, SSLKeys.UNLABELED_PRED: joint[2:]}
    calls = []
    hooks = [net.get_submodule(f"{name}.conv").register_forward_hook(lambda *a: calls.append(1)) for name in layers]
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    for hook in hooks:
        hook.remove()
    strong2, strong1, fp = seen[0], engine.state.output[SSLKeys.UNLABELED_PRED], seen[-1]  # the trainer scores strong1
    assert len(calls) == len(layers) * (1 if fp_pass == "shared" else 2)  # the strong pass; + the fp pass if separate
    torch.testing.assert_close(fp, joint[2:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(strong2, joint[2:], atol=1e-3) and not torch.allclose(strong1, joint[2:], atol=1e-3)
    encoder = net.get_submodule(f"{layers[0]}.conv").weight
    assert torch.autograd.grad(fp.mean(), encoder)[0].abs().sum() > 0  # the fp loss reaches the encoder
    assert not handler._kept  # nothing of this iteration's graph is kept past it
    for layer in layers:  # the blocks compute again after the stream
        assert "forward" not in vars(net.get_submodule(layer))


def test_unimatch_fp_pass_auto_is_shared_with_the_unets_own_encoder_layers_only():
    from medssl.methods import build_method

    unet = UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    handler = next(h for h in build_method("unimatch", network=unet).handlers if isinstance(h, WeakToStrongHandler))
    assert handler.fp_pass == "shared"
    explicit = build_method("unimatch", {"perturb_layers": ["model.0"]}, network=unet).handlers
    assert next(h for h in explicit if isinstance(h, WeakToStrongHandler)).fp_pass == "separate"
    with pytest.raises(ValueError, match="fp_pass 'shared'"):
        build_method("unimatch", {"perturb_layers": ["model.0"], "fp_pass": "shared"}, network=unet)
    with pytest.raises(ValueError, match="fp_pass"):
        build_method("unimatch", {"fp_pass": "both"}, network=unet)


def test_vat_direction_raises_the_kl_more_than_a_random_direction():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 3, padding=1))
    x = torch.randn(4, 1, 12, 12)
    logits = net(x).detach()
    d = vat_direction(net, x, logits, xi=1e-3, iterations=2)
    eps = 1.0
    adversarial = float(prediction_kl(logits, net(x + eps * d)))
    assert float(d.flatten(1).norm(dim=1).mean()) == pytest.approx(1.0, rel=1e-4)
    for _ in range(10):  # every random direction of the same norm raises the KL less
        random = torch.randn_like(x)
        random = random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert adversarial > 1.5 * float(prediction_kl(logits, net(x + eps * random)))


def test_temperature_at_the_cut_only_raises_the_threshold():
    """The old bundles applied temperature 2 at the cut only: sigmoid(z/2) > T is sigmoid(z) > sigmoid(2 logit T),
    so a sampled 0.7 cut at 0.845; at temperature 1 the Bayesian cut is the plain cut at T."""
    z = torch.linspace(-4, 4, 101).view(1, 1, -1)
    t = 0.7
    at_two, _ = hard_pseudo_labels(z, t, temperature=2.0)
    assert torch.equal(at_two, (torch.sigmoid(z) > torch.sigmoid(torch.tensor(2 * math.log(t / (1 - t))))).float())
    assert torch.equal(hard_pseudo_labels(z, t, temperature=1.0)[0], (torch.sigmoid(z) > t).float())


def _head_engine(fit, samples=256):
    torch.manual_seed(0)
    net = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    engine = _engine(net, unsup_weight=1.0)
    head = ThresholdHead(2, in_channels=12)
    threshold = LearnedThreshold(head, "model.1", prior_mu=0.5, prior_std=0.1, fit=fit, samples=samples, kl_weight=0.01)
    threshold.attach(engine)
    return engine, net, head, threshold


def test_threshold_noise_shrinks_with_the_samples_averaged():
    for samples, expected in ((1, 0.1), (256, 0.1 / 16)):
        head = ThresholdHead(2, in_channels=4, init_mu=0.5, init_std=0.1)
        threshold = LearnedThreshold(head, "x", samples=samples)
        draws, _, _ = threshold.sample(torch.zeros(20000, 4, 2, 2), torch.Size([2, 2]))
        assert float(draws.std()) == pytest.approx(expected, rel=0.05)
        assert float(draws.mean()) == pytest.approx(0.5, abs=3 * expected / 100)


def test_threshold_draws_leave_the_global_random_stream_alone():
    """Attached, the threshold draws from its own generator, seeded by the run's seed: the global stream (loader
    shuffles, mixing boxes) is the one of a run without it, and the same seed gives the same draws."""
    features, runs = torch.zeros(4, 4, 2, 2), []
    for _ in range(2):
        torch.manual_seed(7)
        threshold = LearnedThreshold(ThresholdHead(2, in_channels=4, init_mu=0.5, init_std=0.1), "x", samples=1)
        threshold.attach(_engine(torch.nn.Sequential(OrderedDict(x=torch.nn.Conv2d(4, 4, 1)))))
        state = torch.get_rng_state()
        draws = [threshold.sample(features, torch.Size([2, 2]))[0] for _ in range(2)]
        assert torch.equal(torch.get_rng_state(), state)
        assert not torch.equal(draws[0], draws[1])  # one stream, not reseeded at every draw
        runs.append(draws)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def _toy_iteration(engine, net, threshold, best_cut=0.3):
    """Labelled images whose right cut is known: foreground exactly where p > best_cut."""
    x = torch.randn(8, 1, 16, 16)
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    net(x)  # the joint pass: 4 labelled + 4 unlabelled images
    p = torch.rand(4, 1, 16, 16)
    engine.state.output = {SSLKeys.PRED: torch.logit(p), SSLKeys.LABEL: (p > best_cut).float()}
    return threshold(engine, torch.zeros(4, 1, 16, 16))


def test_elbo_threshold_moves_to_the_known_best_cut_and_kl_only_stays_at_the_prior():
    for fit in ("elbo", "kl_only"):
        engine, net, head, threshold = _head_engine(fit)
        opt = torch.optim.Adam(head.parameters(), lr=0.02)
        for _ in range(150):
            t, terms = _toy_iteration(engine, net, threshold)
            opt.zero_grad()
            sum(terms.values()).backward()
            opt.step()
        mean = float(t.mean())
        if fit == "elbo":
            assert "threshold_fit" in terms and abs(mean - 0.3) < 0.05, mean
        else:
            assert set(terms) == {"kl"} and abs(mean - 0.5) < 0.01, mean


def test_gate_closes_on_empty_pseudo_labels_and_out_of_range_thresholds():
    gate = PseudoLabelGate(0.005, (0.05, 0.95))
    pseudo = torch.zeros(1, 1, 20, 20)
    assert not gate(pseudo)
    pseudo[..., 0, 0] = 1  # 1 voxel of 400: 0.25% foreground, under the authors' 0.5%
    assert not gate(pseudo, threshold=torch.tensor([0.5]))
    pseudo[..., 0, 1:3] = 1  # 0.75%: enough
    assert gate(pseudo, threshold=torch.tensor([0.5]))
    pseudo[..., :2, :2] = 1  # 1% foreground
    assert gate(pseudo, threshold=torch.tensor([0.5]))
    assert not gate(pseudo, threshold=torch.tensor([0.97]))
    mask = torch.zeros_like(pseudo)  # nothing kept: nothing to learn
    assert not gate(pseudo, mask=mask)


def test_gated_pseudo_labels_train_nothing_and_drop_the_kl():
    engine, net, head, _ = _head_engine("kl_only")
    handler = BayesianPseudoLabelHandler(head, "model.1", fit="kl_only", gate=PseudoLabelGate(0.5))
    handler.attach(engine)
    net.train()
    engine.fire_event(SSLEvents.INPUTS_READY)
    pred = net(torch.randn(2, 1, 16, 16)) - 20.0  # confident background: no foreground in the pseudo-labels
    engine.state.output = {SSLKeys.UNLABELED_PRED: pred}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    out = engine.state.output
    assert SSLKeys.PSEUDO_LABEL not in out and "kl" not in out.get(SSLKeys.LOSS_TERMS, {})
    assert engine.state.gated == 1


def test_labelled_gate_skips_the_supervised_loss_of_an_empty_crop():
    engine = _engine()
    LabelledForegroundGate(0.005).attach(engine)
    engine.state.output = {SSLKeys.LABEL: torch.zeros(1, 1, 8, 8, 8)}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    assert engine.state.output[SSLKeys.SUPERVISED_WEIGHT] == 0.0
    engine.state.output = {SSLKeys.LABEL: torch.ones(1, 1, 8, 8, 8)}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    assert SSLKeys.SUPERVISED_WEIGHT not in engine.state.output


def test_segpl_from_the_ema_teacher():
    engine = _engine()
    SegPLHandler(0.5, source="teacher").attach(engine)
    teacher = torch.full((1, 1, 2, 2), 3.0)
    engine.state.output = {SSLKeys.UNLABELED_PRED: torch.full((1, 1, 2, 2), -3.0), SSLKeys.TEACHER_PRED: teacher}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    assert engine.state.output[SSLKeys.PSEUDO_LABEL].sum() == 4  # the teacher's cut, not the student's


def test_schedule_starts_when_validation_dice_is_worth_learning_from():
    evaluator = Engine(lambda e, b: None)
    dice = iter([0.2, 0.4, 0.75, 0.8, 0.8])

    @evaluator.on(Events.EPOCH_STARTED)
    def _score(e):
        e.state.metrics = {"val_mean_dice": next(dice)}

    trainer = Engine(lambda e, b: None)
    schedule = UnsupervisedWeightSchedule(max_weight=1.0, warmup=10, ramp=0, unit="epochs", start_dice=0.7, evaluator=evaluator)
    schedule.attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.unsup_weight))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0], max_epochs=1))
    trainer.run(range(2), max_epochs=5)
    # validations after epochs 1, 2, 3 score 0.2, 0.4, 0.75: the ramp starts with epoch 4, not after 10 epochs
    assert seen == [0, 0, 0, 0, 0, 0, 1.0, 1.0, 1.0, 1.0]
    assert schedule.started_at == 3.0
    resumed = UnsupervisedWeightSchedule(start_dice=0.7, evaluator=evaluator, warmup=10)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.start == 3.0


def test_largest_components_keeps_each_class_largest_blob_per_image():
    from medssl.handlers.copy_paste import largest_components

    labels = torch.zeros(2, 1, 8, 8)
    labels[0, 0, :3, :3] = 1  # class 1: a 9-voxel blob and a 1-voxel one
    labels[0, 0, 7, 7] = 1
    labels[0, 0, 5:7, 0:2] = 2  # class 2: one blob of 4, kept whole
    labels[1, 0, 6, 6] = 1  # the second image: one voxel, its own largest component
    kept = largest_components(labels, 3)
    assert kept[0, 0, 7, 7] == 0 and kept[0, 0, :3, :3].eq(1).all() and kept[0, 0, 5:7, 0:2].eq(2).all()
    assert kept[1].sum() == 1 and kept.shape == labels.shape


def test_largest_components_of_a_loaded_batch_slice_like_a_tensor(tmp_path):
    """Labels of a loader's batch carry each file's header (MetaTensor): the kept components are a plain tensor that
    the copy-paste box slices in halves (stacked per-image MetaTensors kept one image's header as the batch's, and
    slicing them failed on the LA track)."""
    import nibabel as nib
    from monai.data import list_data_collate
    from monai.transforms import LoadImage

    from medssl.handlers.copy_paste import largest_components

    load, items = LoadImage(ensure_channel_first=True), []
    for i in range(4):
        volume = np.zeros((8, 8, 8), np.float32)
        volume[i : i + 2, :2, :2] = 1
        volume[7, 7, 7] = 1  # a stray voxel, dropped
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / f"case{i}.nii.gz")
        items.append({"label": load(tmp_path / f"case{i}.nii.gz")})
    batch = list_data_collate(items)["label"]
    kept = largest_components(batch, 2)
    assert type(kept) is torch.Tensor and kept.shape == batch.shape and kept.dtype == batch.dtype
    assert kept[2:].shape == (2, 1, 8, 8, 8)
    assert kept.sum() == 4 * 8 and kept[:, 0, 7, 7, 7].eq(0).all()


def test_copy_paste_can_keep_the_largest_component_of_the_pseudo_labels():
    x, u = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)
    teacher = torch.full((2, 1, 8, 8), -5.0)  # one sigmoid channel: background ...
    teacher[:, :, :4, :4] = 5.0  # ... but a 16-voxel atrium
    teacher[:, :, 7, 7] = 5.0  # and a stray voxel
    engine = _engine(unsup_weight=1.0)
    engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: torch.zeros(2, 1, 8, 8), SSLKeys.UNLABELED_IMAGE: u,
                           SSLKeys.TEACHER_PRED: teacher}  # fmt: skip
    CopyPasteHandler(side_ratio=0.25, largest_component=True).attach(engine)
    engine.fire_event(SSLEvents.INPUTS_READY)
    out = engine.state.output
    outside = out[SSLKeys.IMAGE][0] == 1  # the first mixed image: unlabelled outside the box, pseudo-labelled there
    label = out[SSLKeys.LABEL][0]
    assert label[outside].sum() <= 16 and (not outside[0, 7, 7] or label[0, 7, 7] == 0)


def test_copy_paste_with_the_strong_view_pastes_it_under_the_weak_views_pseudo_labels():
    """``strong_view``: the mixed images carry the unlabelled images' strong view (7) where the teacher labelled the
    weak one (1); the labels are the same as without it; a batch without strong views is an error naming them."""
    x, u, strong = torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8), torch.full((4, 1, 8, 8), 7.0)
    y = torch.full((4, 1, 8, 8), 2.0)
    teacher = torch.zeros(4, 3, 8, 8)
    teacher[:, 1] = 5.0

    def mixed(strong_view, batch):
        engine = _engine(unsup_weight=1.0, unlabeled_batch=batch)
        engine.state.output = {SSLKeys.IMAGE: x, SSLKeys.LABEL: y, SSLKeys.UNLABELED_IMAGE: u,
                               SSLKeys.TEACHER_PRED: teacher}  # fmt: skip
        CopyPasteHandler(side_ratio=0.5, strong_view=strong_view).attach(engine)
        torch.manual_seed(1)
        engine.fire_event(SSLEvents.INPUTS_READY)
        return engine.state.output[SSLKeys.IMAGE], engine.state.output[SSLKeys.LABEL]

    weak_image, weak_label = mixed(False, {"image": u})
    image, label = mixed(True, {"image": u, STRONG_KEYS[0]: strong})
    assert torch.equal(label, weak_label)  # the pseudo-labels are the weak view's, the box the same
    assert set(image.unique().tolist()) == {0.0, 7.0} and set(weak_image.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(image == 7, weak_image == 1)  # the strong view exactly where the weak one was
    with pytest.raises(KeyError, match="image_strong1"):
        mixed(True, {"image": u})
    with pytest.raises(ValueError, match="same patches"):
        mixed(True, {"image": u, STRONG_KEYS[0]: strong[:, :, :4]})


def test_strong_views_follow_a_methods_setting():
    """The loader adds a strong view for BCP only when its ``strong_view`` setting (or a variant's) asks for one."""
    from medssl.methods import strong_views

    assert strong_views("bcp") == 0 and strong_views("bcp_lcc") == 0
    assert strong_views("bcp_strong") == strong_views("bcp_lcc_strong") == 1
    assert strong_views("bcp", {"strong_view": "true"}) == 1 and strong_views("bcp_strong", {"strong_view": False}) == 0
    assert strong_views("fixmatch", {"prior_mu": 0.5}) == 1 and strong_views("unimatch") == 2


def test_weak_to_strong_from_the_ema_teacher_cuts_the_teachers_weak_prediction():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1)
    weak = torch.rand(2, 1, 8, 8)
    engine = _engine(net, unsup_weight=1.0)
    engine.unsup_loss_function = __import__("medssl.losses", fromlist=["MaskedDiceCELoss"]).MaskedDiceCELoss()
    engine.state.unlabeled_batch = {"image": weak, STRONG_KEYS[0]: weak * 0.5}
    handler = WeakToStrongHandler(FixedThreshold(0.4), views=1, cutmix_prob=0.0, source="teacher")
    handler.attach(engine)
    teacher = torch.randn(2, 3, 8, 8) * 3
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: weak, SSLKeys.UNLABELED_PRED: net(weak), SSLKeys.TEACHER_PRED: teacher}
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    expected, mask = confident_pseudo_labels(teacher, 0.4)
    assert torch.equal(engine.state.output[SSLKeys.PSEUDO_LABEL], expected)
    assert torch.equal(engine.state.output[SSLKeys.PSEUDO_MASK], mask)
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: weak, SSLKeys.UNLABELED_PRED: net(weak)}
    with pytest.raises(RuntimeError, match="source='teacher' needs its teacher handler"):
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)


def _logits_of(probs, shape=(2, 4, 4)):
    """Logits whose softmax is ``probs`` at every pixel of a (B, H, W) batch."""
    log = torch.tensor(probs).log().view(1, -1, 1, 1)
    return log.expand(shape[0], -1, *shape[1:]).clone()


def test_distribution_alignment_moves_the_unlabelled_marginal_to_the_labelled_one():
    """ReMixMatch's q' = normalise(q * p(y) / p~(y)): with one batch of statistics (momentum 0) a prediction equal to
    its own marginal becomes the labelled class shares, here 0.5 / 0.375 / 0.125 of the label map."""
    from medssl.handlers.distribution_alignment import DistributionAlignment

    label = torch.zeros(2, 1, 4, 4)
    label[:, :, :2] = 0  # half background
    label[:, :, 2:, :3] = 1  # 6 of 16 pixels class 1
    label[:, :, 2:, 3] = 2  # 2 of 16 class 2
    engine = _engine()
    engine.state.output = {SSLKeys.LABEL: label}
    align = DistributionAlignment(momentum=0.0)
    aligned = torch.softmax(align(engine, _logits_of([0.45, 0.40, 0.15])), dim=1)
    assert torch.allclose(aligned[0, :, 0, 0], torch.tensor([0.5, 0.375, 0.125]), atol=1e-5)
    # a running mean: the second batch's shares weigh 1 - momentum
    slow = DistributionAlignment(momentum=0.75)
    slow(engine, _logits_of([0.45, 0.40, 0.15]))
    engine.state.output = {SSLKeys.LABEL: torch.zeros(2, 1, 4, 4)}  # all background
    slow(engine, _logits_of([0.45, 0.40, 0.15]))
    assert torch.allclose(slow.labelled, 0.75 * torch.tensor([0.5, 0.375, 0.125]) + 0.25 * torch.tensor([1.0, 0, 0]))
    restored = DistributionAlignment()
    restored.load_state_dict(slow.state_dict())
    assert torch.equal(restored.labelled, slow.labelled) and torch.equal(restored.unlabelled, slow.unlabelled)


def test_distribution_alignment_of_one_sigmoid_channel():
    from medssl.handlers.distribution_alignment import DistributionAlignment

    engine = _engine()
    label = torch.zeros(1, 1, 10, 10)
    label[:, :, :3] = 1  # 30% foreground
    engine.state.output = {SSLKeys.LABEL: label}
    p = torch.full((1, 1, 10, 10), 0.1)
    aligned = torch.sigmoid(DistributionAlignment(momentum=0.0)(engine, torch.logit(p)))
    assert torch.allclose(aligned, torch.full_like(p, 0.3), atol=1e-5)


def test_weak_to_strong_cuts_the_aligned_prediction():
    """With alignment the weak view's 0.45 / 0.40 / 0.15 (below a cut at 0.5, nothing kept) becomes the labelled
    shares 0.2 / 0.6 / 0.2: class 1 kept everywhere; the method keeps the statistics under the piece's name."""
    from medssl.handlers.distribution_alignment import DistributionAlignment

    net = torch.nn.Conv2d(1, 3, 1)
    weak_logits = _logits_of([0.45, 0.40, 0.15], shape=(2, 4, 5))
    label = torch.tensor([0, 1, 1, 1, 2] * 8, dtype=torch.float32).view(2, 1, 4, 5)
    results = {}
    for align in (None, DistributionAlignment(momentum=0.0)):
        engine = _engine(net, unsup_weight=0.0)  # the warm-up: pseudo-labels without the strong passes
        handler = WeakToStrongHandler(FixedThreshold(0.5), views=1, cutmix_prob=0.0, align=align)
        handler.attach(engine)
        engine.state.output = {SSLKeys.LABEL: label, SSLKeys.UNLABELED_IMAGE: torch.rand(2, 1, 4, 5),
                               SSLKeys.UNLABELED_PRED: weak_logits}  # fmt: skip
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        results[align is None] = engine.state.output
    assert float(results[True][SSLKeys.PSEUDO_MASK].sum()) == 0
    assert torch.equal(results[False][SSLKeys.PSEUDO_MASK], torch.ones(2, 1, 4, 5))
    assert torch.equal(results[False][SSLKeys.PSEUDO_LABEL], torch.ones(2, 1, 4, 5))
    from medssl.methods import build_method

    built = build_method("fixmatch_t05_da", network=UNet(2, 1, 3, channels=(4, 8), strides=(2,)), run_length=10,
                         unit="iterations")  # fmt: skip
    assert "distribution_alignment" in built.state_dict()


def test_distribution_alignment_to_a_given_prior_ignores_the_labelled_crops():
    """A ``prior`` (the labelled volumes' class shares) stands for the labelled marginal: the over-stated foreground of
    crops centred on it does not move it; a prior of the wrong length or with a negative share is refused."""
    from medssl.handlers.distribution_alignment import DistributionAlignment

    engine = _engine()
    engine.state.output = {SSLKeys.LABEL: torch.ones(1, 1, 4, 4)}  # a crop centred on the foreground: all of it
    align = DistributionAlignment(momentum=0.0, prior=[9, 1])  # normalised: 0.9 / 0.1
    p = torch.full((1, 1, 4, 4), 0.2)
    aligned = torch.sigmoid(align(engine, torch.logit(p)))
    # q' = normalise([0.8, 0.2] * [0.9, 0.1] / [0.8, 0.2]) = [0.9, 0.1]
    assert torch.allclose(aligned, torch.full_like(p, 0.1), atol=1e-5)
    assert torch.allclose(align.labelled, torch.tensor([0.9, 0.1]))
    with pytest.raises(ValueError, match="2 class shares, the prediction 3 classes"):
        DistributionAlignment(prior=[0.5, 0.5])(engine, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="non-negative class shares"):
        DistributionAlignment(prior=[1.0, -0.5])


def _save_label(path, array):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.eye(4)), str(path))
    return str(path)


def test_crop_class_shares_weights_each_voxel_by_its_chance_of_being_cropped(tmp_path):
    """The labelled marginal under uniform crops, by hand: on a 4 x 3 map cropped 2 x 3, the rows lie in a crop with
    chance 1/3, 2/3, 2/3, 1/3 (3 starts); a first row of class 1 is then 3 x 1/3 = 1 voxel of a 6-voxel crop (1/6, where
    the whole map holds 1/4). Maps are drawn equally often; BraTS values go through the convention; a binary network
    gets background and foreground."""
    from medssl.handlers.distribution_alignment import crop_class_shares

    top = np.zeros((4, 3))
    top[0] = 1
    first = _save_label(tmp_path / "top.nii.gz", top)
    assert np.allclose(crop_class_shares([first], (2, 3), classes=2), [5 / 6, 1 / 6])
    assert np.allclose(crop_class_shares([{"label": first}], (2, 3), classes=1), [5 / 6, 1 / 6])
    # a crop longer than an axis takes all of it (4 x 3 cropped 8 x 3: every voxel, the whole map's 1/4)
    assert np.allclose(crop_class_shares([first], (8, 3), classes=2), [3 / 4, 1 / 4])
    # BraTS 2018 values 0, 1, 2, 4 -> classes 0-3; a second map, all enhancing tumour, weighs as much as the first
    enhancing = _save_label(tmp_path / "et.nii.gz", np.full((4, 3), 4))
    shares = crop_class_shares([first, enhancing], (2, 3), classes=4, convention="2018")
    assert np.allclose(shares, [5 / 12, 1 / 12, 0.0, 1 / 2])


def test_crop_class_shares_is_the_marginal_of_monai_random_crops(tmp_path):
    """Against the crops themselves: the mean class share of many ``RandSpatialCropSamplesd`` crops of a 3D map."""
    from monai.transforms import LoadImaged, RandSpatialCropSamplesd

    from medssl.handlers.distribution_alignment import crop_class_shares

    rng = np.random.default_rng(0)
    label = np.zeros((12, 10, 8))
    label[2:7, 1:4, :3] = 1  # an off-centre block of class 1
    label[8:, 6:, 5:] = 2
    path = _save_label(tmp_path / "vol.nii.gz", label)
    expected = crop_class_shares([path], (6, 5, 4), classes=3)
    crops = RandSpatialCropSamplesd("label", roi_size=(6, 5, 4), num_samples=4000, random_size=False)
    crops.set_random_state(int(rng.integers(1 << 31)))
    data = LoadImaged("label", image_only=True, ensure_channel_first=True)({"label": path})
    drawn = np.stack([np.bincount(c["label"].numpy().astype(int).ravel(), minlength=3) for c in crops(data)])
    assert np.allclose(drawn.sum(0) / drawn.sum(), expected, atol=0.005)
    assert float((label == 2).mean()) - expected[2] > 0.02  # a corner is cropped less often than the whole map has it


def test_crop_class_shares_names_the_file_of_a_bad_map(tmp_path):
    from medssl.handlers.distribution_alignment import crop_class_shares

    bad = _save_label(tmp_path / "bad.nii.gz", np.full((4, 3), 3))
    with pytest.raises(ValueError, match=r"bad\.nii\.gz: .*3"):
        crop_class_shares([bad], (2, 2), classes=4, convention="2018")  # 3 is no BraTS 2018 label
    with pytest.raises(ValueError, match=r"bad\.nii\.gz: label values \[3\] are not classes 0-1"):
        crop_class_shares([bad], (2, 2), classes=2)
    with pytest.raises(ValueError, match=r"bad\.nii\.gz: a label map of shape \(4, 3\), not 3D"):
        crop_class_shares([bad], (2, 2, 2), classes=4)
    with pytest.raises(ValueError, match="at least one label map"):
        crop_class_shares([], (2, 2), classes=2)


def test_a_method_state_taken_from_meta_tensors_loads_with_weights_only(tmp_path):
    """The trainer's batches are MONAI MetaTensors, so are the statistics a piece keeps of them (the alignment's
    marginals): the method's state stores plain tensors, which ``torch.load(weights_only=True)`` accepts (a checkpoint
    of a run with alignment was refused before)."""
    from monai.data import MetaTensor

    from medssl.checkpoints import load_state_dict_file
    from medssl.methods import build_method

    built = build_method("fixmatch_t05_da", network=UNet(2, 1, 3, channels=(4, 8), strides=(2,)), run_length=10,
                         unit="iterations")  # fmt: skip
    piece = next(p for _, p in built._stateful().values() if type(p).__name__ == "DistributionAlignment")
    engine = _engine()
    engine.state.output = {SSLKeys.LABEL: MetaTensor(torch.ones(1, 1, 4, 4))}
    piece(engine, MetaTensor(torch.zeros(1, 3, 4, 4)))
    assert isinstance(piece.unlabelled, MetaTensor)  # what the piece keeps, as it came
    torch.save({"method": built.state_dict()}, tmp_path / "ckpt.pt")
    state = load_state_dict_file(tmp_path / "ckpt.pt")["method"]["distribution_alignment"]
    assert type(state["unlabelled"]) is torch.Tensor
    assert torch.allclose(state["unlabelled"], torch.full((3,), 1 / 3))
    assert torch.allclose(state["labelled"], torch.tensor([0.0, 1.0, 0.0]))


def test_entropy_weighted_ensemble_by_hand():
    """AD-MT's fusion at one voxel: teacher 1 [0.9, 0.1] (H = 0.469 bits), teacher 2 [0.4, 0.6] (H = 0.971 bits);
    w1 = e^-0.469 / (e^-0.469 + e^-0.971) = 0.623, so q = 0.623 [0.9, 0.1] + 0.377 [0.4, 0.6] = [0.711, 0.289]; with
    temperature 0.5, q^2 renormalised = [0.858, 0.142]."""
    from medssl.handlers.ema_teacher import entropy_weighted_ensemble

    first = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1)
    second = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1)
    h1 = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    h2 = -(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6))
    w1 = math.exp(-h1) / (math.exp(-h1) + math.exp(-h2))
    q = [w1 * 0.9 + (1 - w1) * 0.4, w1 * 0.1 + (1 - w1) * 0.6]
    assert abs(w1 - 0.6229) < 1e-3
    fused = entropy_weighted_ensemble(first, second)
    assert torch.allclose(fused.flatten(), torch.tensor(q), atol=1e-6)
    sharp = entropy_weighted_ensemble(first, second, temperature=0.5).flatten()
    assert torch.allclose(sharp, torch.tensor([q[0] ** 2, q[1] ** 2]) / (q[0] ** 2 + q[1] ** 2), atol=1e-6)
    assert torch.allclose(entropy_weighted_ensemble(second, first), fused)  # the order of the teachers does not matter


def test_alternate_teachers_take_turns_and_fuse_their_predictions():
    """Only the active teacher follows the student after a step; the turn passes after a drawn stretch of 1 to
    ``period`` iterations; ``TEACHER_PRED`` is the logits of the fused prediction (one sigmoid channel: the logit of the
    fused foreground probability); the state (both teachers, the turn, the draws) resumes exactly."""
    from medssl.handlers.ema_teacher import AlternateEMATeachers, entropy_weighted_ensemble

    torch.manual_seed(0)
    student = torch.nn.Conv2d(1, 1, 1)
    pair = AlternateEMATeachers(student, decay=0.5, period=3)
    engine = _engine(student)
    pair.attach(engine)
    turns = []
    for step in range(1, 13):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(1.0)  # the student moves every step
        before = [[t.clone() for t in teacher.parameters()] for teacher in pair.teachers]
        active = pair.active
        engine.state.iteration = step
        pair.update(engine)
        moved = [any(not torch.equal(a, b) for a, b in zip(old, teacher.parameters()))
                 for old, teacher in zip(before, pair.teachers)]  # fmt: skip
        assert moved == [active == 0, active == 1]
        turns.append(active)
    stretches = [len(list(g)) for _, g in __import__("itertools").groupby(turns)]
    assert set(turns) == {0, 1} and all(1 <= n <= 3 for n in stretches[:-1])
    images = torch.rand(2, 1, 4, 4)
    engine.state.output = {SSLKeys.UNLABELED_IMAGE: images}
    pair.predict(engine)
    probs = [torch.cat([1 - torch.sigmoid(t(images)), torch.sigmoid(t(images))], 1) for t in pair.teachers]
    fused = entropy_weighted_ensemble(*probs)
    assert torch.allclose(torch.sigmoid(engine.state.output[SSLKeys.TEACHER_PRED]), fused[:, 1:], atol=1e-5)
    state = pair.state_dict()
    other = AlternateEMATeachers(torch.nn.Conv2d(1, 1, 1), decay=0.5, period=3)
    other.attach(_engine(torch.nn.Conv2d(1, 1, 1)))
    other.load_state_dict(state)
    assert (other.active, other.counter, other.stretch) == (pair.active, pair.counter, pair.stretch)
    assert [other._draw() for _ in range(5)] == [pair._draw() for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(other.teachers[1].parameters(), pair.teachers[1].parameters()))
    with pytest.raises(ValueError, match="period must be a whole number"):
        AlternateEMATeachers(student, period=0)


def test_fixmatch_with_the_alternate_teachers_is_a_composition():
    """``fixmatch_admt``: the two teachers attach before the weak-to-strong handler, which cuts ``TEACHER_PRED`` at
    AD-MT's 0.8 with cross-entropy; the other methods with a source take it too (SegPL)."""
    from medssl.handlers.ema_teacher import AlternateEMATeachers
    from medssl.methods import build_method

    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,))
    built = build_method("fixmatch_admt", network=net, run_length=10, unit="iterations")
    kinds = [type(h) for h in built.handlers]
    assert kinds.index(AlternateEMATeachers) < kinds.index(WeakToStrongHandler)
    assert built.handlers[kinds.index(WeakToStrongHandler)].source == "alternate"
    assert (built.settings["threshold"], built.settings["unsup_loss"], built.settings["alternate_period"]) == (0.8, "ce", 19)
    assert "alternate_teachers" in built.state_dict()
    segpl = build_method("segpl", {"source": "alternate", "alternate_period": 5}, network=net)
    assert next(h for h in segpl.handlers if isinstance(h, AlternateEMATeachers)).period == 5
