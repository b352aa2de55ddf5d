"""Bidirectional copy-paste (BCP, Bai et al., CVPR 2023), the leading method on ACDC and LA.

A supervised pre-training stage (the unsupervised weight is 0) on labelled images pasted into each other (the labelled
batch's halves ``a``, ``b``: ``a`` outside, ``b`` inside a box; as BCP's ``pre_train`` does, half as many mixed images
as labelled ones, their labels mixed alike, the plain supervised loss), then self-training on mixed images only. Each iteration splits the labelled batch into halves ``a``, ``b`` and the unlabelled batch into
``ua``, ``ub`` and pastes a random box (2/3 of each side) both ways:

- ``ua`` outside, ``a`` inside the box: labelled by the EMA teacher's pseudo-label of ``ua`` outside and ``a``'s label
  inside; the pseudo-labelled part weighted by ``alpha`` (0.5);
- ``b`` outside, ``ub`` inside: ``b``'s label outside, the pseudo-label of ``ub`` inside (weighted by ``alpha``).

The student is trained on the two mixed halves with a weighted Dice + cross-entropy (the trainer's supervised loss
is replaced: ``SUPERVISED_WEIGHT`` 0); the teacher (an :class:`~medssl.handlers.EMATeacher` restarted from the
pre-trained student when self-training starts) gives the pseudo-labels, the argmax of its predictions.

With ``strong_view`` (medssl's composition with FixMatch's views, not in BCP's paper) the unlabelled images enter the
mixed images as their strong view (``image_strong1`` from the loader: the same patch, its intensities perturbed,
:func:`medssl.transforms.presets.strong_views`) while the teacher labels their weak view: the student learns to
predict on a strongly perturbed image what the teacher sees on a weakly perturbed one, inside the copy-paste.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from medssl.checks import check_in_range
from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.handlers.weak_strong import STRONG_KEYS, strong_view
from medssl.losses.semi_supervised import MaskedDiceCELoss
from medssl.transforms.mixing import box_mask, box_mix

__all__ = ["CopyPasteHandler", "largest_components"]

_WEIGHT = "copy_paste_weight"


def largest_components(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``labels`` (``(batch, 1, *spatial)``, values ``0..num_classes-1``) with each foreground class of each image
    kept only in its largest connected component (MONAI's ``KeepLargestConnectedComponent``, classes independent);
    the rest becomes background. A plain tensor: a loader's labels carry each file's header (MetaTensor), which
    per-image results stacked back would not keep as a batch's."""
    from monai.transforms import KeepLargestConnectedComponent
    from monai.utils import convert_to_tensor

    keep = KeepLargestConnectedComponent(applied_labels=list(range(1, num_classes)), is_onehot=False, independent=True)
    plain = convert_to_tensor(labels, track_meta=False)
    return torch.stack([convert_to_tensor(keep(item), track_meta=False).to(plain) for item in plain])


class CopyPasteHandler:
    """Mix labelled and unlabelled images both ways by a box (see the module docstring).

    Args:
        side_ratio: the box's side as a share of each image side (BCP: 2/3).
        alpha: weight of the pseudo-labelled voxels in the loss (BCP's ``u_weight``: 0.5).
        dice_batch: pool the loss's Dice over the batch (2D slices; see :class:`medssl.methods.MethodContext`).
        labelled_mix: in pre-training, train on labelled images pasted into each other (BCP's recipe); False trains
            on the labelled images as they are.
        largest_component: keep only the largest connected component of each class of the teacher's pseudo-labels
            (each image of the batch on its own: 2D slices in 2D, volumes in 3D), as BCP's code does (``nms=1``; its
            paper does not say so); voxels outside it become background.
        strong_view: mix the unlabelled images' strong view (``image_strong1`` of the unlabelled batch) in place of
            the weak one the teacher labels (see the module docstring).

    Raises:
        ValueError: an argument out of range.

    Batches of different or odd sizes (a loader's last batch) are cut to the largest even number of pairs; the images
    left out train nothing that iteration, and an iteration with no pair is supervised only.
    """

    def __init__(
        self,
        side_ratio: float = 2 / 3,
        alpha: float = 0.5,
        dice_batch: bool = False,
        labelled_mix: bool = True,
        largest_component: bool = False,
        strong_view: bool = False,
    ) -> None:
        self.side_ratio = check_in_range("side_ratio", side_ratio, 0.0, 1.0, low_inclusive=False)
        self.alpha = check_in_range("alpha", alpha, 0.0, 1.0)
        self.labelled_mix = bool(labelled_mix)
        self.largest_component = bool(largest_component)
        self.strong_view = bool(strong_view)
        self.loss = MaskedDiceCELoss(batch=dice_batch)

    def attach(self, engine: Engine) -> None:
        """Mix before the forward pass (after the teacher's predictions), score the mixed images after it."""
        engine.add_event_handler(SSLEvents.INPUTS_READY, self.mix)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.score)

    def mix(self, engine: Engine) -> None:
        out = engine.state.output
        if float(getattr(engine.state, "unsup_weight", 0.0)) <= 0 or out.get(SSLKeys.UNLABELED_IMAGE) is None:
            out[SSLKeys.UNLABELED_IMAGE] = None  # pre-training: supervised only, no unlabelled pass
            if self.labelled_mix and len(out[SSLKeys.IMAGE]) >= 2:
                x, y = out[SSLKeys.IMAGE], out[SSLKeys.LABEL]
                h = len(x) // 2
                box = box_mask(h, x.shape[2:], self.side_ratio, device=x.device)
                out[SSLKeys.IMAGE] = box_mix(x[:h], x[h : 2 * h], box)
                out[SSLKeys.LABEL] = box_mix(y[:h], y[h : 2 * h], box)
            return
        x, y, u = out[SSLKeys.IMAGE], out[SSLKeys.LABEL], out[SSLKeys.UNLABELED_IMAGE]
        teacher = out.get(SSLKeys.TEACHER_PRED)
        if teacher is None:
            raise RuntimeError("copy-paste needs an EMATeacher attached before it (the pseudo-label source)")
        if self.strong_view:
            u = self._strong(engine, u)
        # a loader's last, shorter batch: mix the largest even number of pairs; with none, supervised only
        n = min(len(x), len(u)) // 2 * 2
        if n == 0:
            out[SSLKeys.UNLABELED_IMAGE] = None
            return
        x, y, u, teacher = x[:n], y[:n], u[:n], teacher[:n]
        plab = teacher.argmax(dim=1, keepdim=True).to(y.dtype) if teacher.shape[1] > 1 else (teacher > 0).to(y.dtype)
        if self.largest_component:
            plab = largest_components(plab, max(teacher.shape[1], 2))
        h = len(x) // 2
        box = box_mask(h, x.shape[2:], self.side_ratio, device=x.device)
        ones = torch.ones_like(box)
        out[SSLKeys.IMAGE] = torch.cat([box_mix(u[:h], x[:h], box), box_mix(x[h:], u[h:], box)])
        out[SSLKeys.LABEL] = torch.cat([box_mix(plab[:h], y[:h], box), box_mix(y[h:], plab[h:], box)])
        out[_WEIGHT] = torch.cat([box_mix(self.alpha * ones, ones, box), box_mix(ones, self.alpha * ones, box)])
        out[SSLKeys.UNLABELED_IMAGE] = None  # the mixed images are the whole batch

    @staticmethod
    def _strong(engine: Engine, weak: torch.Tensor) -> torch.Tensor:
        """The strong view of the unlabelled batch the teacher labelled (``weak``): the loader's ``image_strong1``."""
        strong = strong_view(engine, STRONG_KEYS[0])
        if strong.shape != weak.shape:
            raise ValueError(f"the strong view's shape {tuple(strong.shape)} is not the weak view's "
                             f"{tuple(weak.shape)}: both must be views of the same patches")  # fmt: skip
        return strong

    def score(self, engine: Engine) -> None:
        out = engine.state.output
        weight = out.pop(_WEIGHT, None)
        if weight is None:
            return
        out[SSLKeys.SUPERVISED_WEIGHT] = 0.0
        out.setdefault(SSLKeys.LOSS_TERMS, {})["copy_paste"] = self.loss(out[SSLKeys.PRED], out[SSLKeys.LABEL], mask=weight)
