"""Weak-to-strong consistency: FixMatch (Sohn et al., NeurIPS 2020) and UniMatch (Yang et al., CVPR 2023).

The unlabelled images arrive weakly augmented (the loader's flips and rotations) and, from the same loader, as
strongly augmented copies (``image_strong1``, ``image_strong2``: intensity, contrast, blur and noise, see
:func:`medssl.transforms.presets.strong_views`). The pseudo-label is the prediction of the **weak** view (the trainer's
joint forward pass), kept where its confidence exceeds a cut (a :class:`~medssl.handlers.threshold.Threshold`: fixed,
learned by the Bayesian threshold head of paper 000, :class:`~medssl.handlers.learned_threshold.LearnedThreshold`, or
FreeMatch's self-adaptive one); the loss is on the **strong** views, each CutMixed with another image of the batch
(the pseudo-label and its mask mixed by the same box). With ``source="teacher"`` the pseudo-label is an EMA
teacher's prediction of the weak view (:class:`~medssl.handlers.EMATeacher`, attached before; the cut is computed as
for the student's, as :class:`~medssl.handlers.PseudoLabelHandler` does).

- FixMatch: one strong view; its loss is the trainer's unsupervised loss.
- UniMatch: two strong views (each its own CutMix, both through the network in one pass, as its code does) and the
  feature-perturbation stream: the encoder's features of the weak images with channel dropout (p = 0.5), decoded and
  supervised by the same pseudo-labels. ``fp_pass="shared"`` does it as UniMatch's code does: the encoder runs once,
  in the trainer's joint pass (each perturbed layer's output is kept), and the stream decodes the kept features
  dropped out (each perturbed layer returns its kept output's dropped-out copy without computing; the layers after
  it, the decoder and its skip connections, compute on those). It needs every encoder block among the perturbed
  layers (MONAI's ``UNet``: its downsampling blocks). ``"separate"`` runs the whole network again on the weak images
  with dropout after each perturbed layer (any network; the encoder's cost twice, and a block computes on its
  predecessor's dropped-out output).
  UniMatch's loss ``(L_s1 + L_s2) / 4 + L_fp / 2`` is ``max_weight * (L_s1 + L_s2 + 2 L_fp)`` with ``max_weight``
  0.25: the trainer weights ``L_s1``, this handler hands over ``strong2`` and ``feature_perturbation`` with the same
  weight (times ``strong2_weight`` 1 and ``fp_weight`` 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
import torch.nn.functional as F

from medssl.checks import check_choice, check_in_range, check_positive
from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers.distribution_alignment import DistributionAlignment
from medssl.handlers.gate import PseudoLabelGate
from medssl.handlers.pseudo_label import SOURCES
from medssl.handlers.threshold import Threshold
from medssl.transforms.mixing import box_mix, random_area_box_mask
from medssl.transforms.presets import STRONG_KEYS
from medssl.transforms.thresholding import confident_pseudo_labels

__all__ = ["WeakToStrongHandler", "STRONG_KEYS", "FP_PASSES", "strong_view"]

#: How UniMatch's feature-perturbation stream reaches the encoder's features (see the module docstring).
FP_PASSES = ("shared", "separate")


def strong_view(engine: Engine, key: str) -> torch.Tensor:
    """The strong view ``key`` of this iteration's unlabelled batch (the loader's, :data:`STRONG_KEYS`), on the device.

    Raises:
        KeyError: the batch has no such view (the bundle's unlabelled pre-processing made none).
    """
    batch = engine.state.unlabeled_batch
    if not isinstance(batch, dict) or key not in batch:
        raise KeyError(f"the unlabelled batch has no '{key}': the method needs strong views from the loader "
                       "(the bundle's unlabelled pre-processing with strong_views)")  # fmt: skip
    return batch[key].to(engine.state.device)


class WeakToStrongHandler:
    """Pseudo-labels from the weak view, losses on the strong views (see the module docstring).

    Args:
        threshold: the cut, a :class:`Threshold` (FixMatch and UniMatch: a fixed 0.95).
        views: strong views, 1 (FixMatch) or 2 (UniMatch).
        perturb_layers: network modules whose outputs get channel dropout in the feature-perturbation stream
            (UniMatch); None or empty for none.
        dropout: dropout probability of the feature perturbation.
        cutmix_prob: probability that a strong view is CutMixed with another image of the batch.
        strong2_weight: weight of the second strong view's loss, relative to the first's (UniMatch: 1).
        fp_weight: weight of the feature-perturbation loss, relative to the first strong view's (UniMatch: 2).
        temperature: logits are divided by it before the softmax/sigmoid.
        gate: a :class:`PseudoLabelGate`, or None.
        source: ``"student"`` (the prediction of the trainer's weak pass), ``"teacher"`` or ``"alternate"``
            (``TEACHER_PRED``: the EMA teacher's, or the fusion of two EMA teachers updated in turn).
        align: a :class:`~medssl.handlers.distribution_alignment.DistributionAlignment` applied to the source's
            prediction before the cut, or None.
        fp_pass: ``"shared"`` or ``"separate"``: how the feature-perturbation stream reaches the encoder's features
            (see the module docstring).

    Raises:
        ValueError: ``views`` not 1 or 2, or an argument out of range.
    """

    def __init__(
        self,
        threshold: Threshold,
        views: int = 1,
        perturb_layers: Sequence[str] | None = None,
        dropout: float = 0.5,
        cutmix_prob: float = 0.5,
        strong2_weight: float = 1.0,
        fp_weight: float = 2.0,
        temperature: float = 1.0,
        gate: PseudoLabelGate | None = None,
        source: str = "student",
        align: DistributionAlignment | None = None,
        fp_pass: str = "separate",
    ) -> None:
        if views not in (1, 2):
            raise ValueError(f"views must be 1 (FixMatch) or 2 (UniMatch), got {views}.")
        self.threshold = threshold
        self.views = views
        self.perturb_layers = list(perturb_layers or [])
        self.dropout = check_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.cutmix_prob = check_in_range("cutmix_prob", cutmix_prob, 0.0, 1.0)
        self.strong2_weight = check_positive("strong2_weight", strong2_weight, strict=False)
        self.fp_weight = check_positive("fp_weight", fp_weight, strict=False)
        self.temperature = check_positive("temperature", temperature)
        self.gate = gate
        self.source = check_choice("source", source, SOURCES)
        self.align = align
        self.fp_pass = check_choice("fp_pass", fp_pass, FP_PASSES)
        self._perturb = False
        self._record = False
        self._layers: list[torch.nn.Module] = []
        self._kept: dict[torch.nn.Module, torch.Tensor] = {}

    def attach(self, engine: Engine) -> None:
        """Hook the perturbed layers, attach the threshold, run after every forward pass."""
        self.threshold.attach(engine)
        network = getattr(engine.network, "module", engine.network)
        for name in self.perturb_layers:
            try:
                layer = network.get_submodule(name)
            except AttributeError:
                raise ValueError(f"perturb layer '{name}' is not a module of {type(network).__name__}") from None
            layer.register_forward_hook(self._maybe_drop)
            self._layers.append(layer)
        engine.state.gated = 0
        if self._layers and self.fp_pass == "shared":
            engine.add_event_handler(SSLEvents.INPUTS_READY, self._start_keeping)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def _start_keeping(self, engine: Engine) -> None:
        """Keep the perturbed layers' outputs of the trainer's joint pass (the next forward)."""
        self._kept.clear()
        self._record = True

    def _drop(self, features: torch.Tensor) -> torch.Tensor:
        drop = F.dropout2d if features.ndim == 4 else F.dropout3d  # channel dropout, as UniMatch's Dropout2d
        return drop(features, self.dropout, training=True)

    def _maybe_drop(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self._record:
            self._kept[module] = output  # the last pass of the joint forward holds the unlabelled images last
        if not self._perturb:
            return None
        return self._drop(output)

    def _feature_perturbation(self, engine: Engine, images: torch.Tensor) -> torch.Tensor:
        """The prediction of the feature-perturbation stream for ``images`` (the weak unlabelled batch)."""
        if self.fp_pass == "separate":
            self._perturb = True
            try:
                return engine.inferer(images, engine.network)
            finally:
                self._perturb = False
        n = len(images)
        missing = [layer for layer in self._layers if layer not in self._kept or len(self._kept[layer]) < n]
        if missing:
            raise RuntimeError("fp_pass='shared': the joint pass kept no encoder features of the unlabelled images "
                               f"for {len(missing)} perturbed layer(s)")  # fmt: skip
        kept = {layer: self._drop(self._kept[layer][-n:]) for layer in self._layers}
        try:
            for layer, features in kept.items():  # each block returns its dropped-out features without computing
                layer.forward = lambda *args, _f=features, **kwargs: _f
            return engine.inferer(images, engine.network)
        finally:
            for layer in kept:
                del layer.forward
            self._kept.clear()

    def _mixed(self, engine: Engine, key: str, pseudo: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The strong view ``key`` CutMixed with another image of the batch, with its pseudo-label and mask."""
        image = strong_view(engine, key)
        box = random_area_box_mask(image.shape[0], image.shape[2:], prob=self.cutmix_prob, device=image.device)
        image, pseudo, mask = (box_mix(t, t.roll(1, 0), box) for t in (image, pseudo, mask))
        return image, pseudo, mask

    def _strong_views(self, engine: Engine, pseudo: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """``(prediction, pseudo-label, mask)`` of each strong view. UniMatch's two views go through the network in
        one pass, as its code does (``model(torch.cat((img_u_s1, img_u_s2)))``: batch norm normalises them
        together)."""
        views = [self._mixed(engine, key, pseudo, mask) for key in STRONG_KEYS[: self.views]]
        preds = engine.inferer(torch.cat([image for image, _, _ in views]), engine.network).chunk(len(views))
        return [(pred, p, m) for pred, (_, p, m) in zip(preds, views)]

    def __call__(self, engine: Engine) -> None:
        self._record = False
        out = engine.state.output
        weak = out.get(SSLKeys.UNLABELED_PRED)
        if weak is None:
            return
        cut_from = out.get(SSLKeys.TEACHER_PRED) if self.source != "student" else weak
        if cut_from is None:
            raise RuntimeError(f"source={self.source!r} needs its teacher handler attached before this one")
        if self.align is not None:
            cut_from = self.align(engine, cut_from)
        threshold, terms = self.threshold(engine, weak)
        pseudo, mask = confident_pseudo_labels(cut_from, Threshold.as_map(threshold, weak.ndim), self.temperature)
        out[SSLKeys.THRESHOLD] = threshold
        weight = float(getattr(engine.state, "unsup_weight", 1.0))
        ranged = threshold if self.threshold.range_gated else None
        if self.gate is not None and not self.gate(pseudo, mask, ranged):
            engine.state.gated += 1
            terms.pop("kl", None)
        elif weight > 0:  # the strong passes cost as much as the weak one: none during the warm-up
            loss = engine.unsup_loss_function
            first, *second = self._strong_views(engine, pseudo, mask)
            out[SSLKeys.UNLABELED_PRED], out[SSLKeys.PSEUDO_LABEL], out[SSLKeys.PSEUDO_MASK] = first
            if second:
                pred, p2, m2 = second[0]
                terms["strong2"] = weight * self.strong2_weight * loss(pred, p2, mask=m2)
            if self.perturb_layers:
                pred = self._feature_perturbation(engine, out[SSLKeys.UNLABELED_IMAGE])
                terms["feature_perturbation"] = weight * self.fp_weight * loss(pred, pseudo, mask=mask)
        else:
            out[SSLKeys.PSEUDO_LABEL], out[SSLKeys.PSEUDO_MASK] = pseudo, mask  # statistics during the warm-up
        if terms:
            out.setdefault(SSLKeys.LOSS_TERMS, {}).update(terms)
        self._kept.clear()  # the kept features hold the joint pass's graph: not past this iteration
