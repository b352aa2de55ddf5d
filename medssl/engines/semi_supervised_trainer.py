"""The one semi-supervised trainer of medssl: MONAI's ``SupervisedTrainer`` with an unlabelled stream.

Pseudo-label methods are handlers attached to it (see ``medssl.handlers``), never subclasses of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from torch.utils.data import DataLoader, DistributedSampler

from medssl.checks import check_bool, check_positive
from medssl.engines.keys import SSLEvents, SSLKeys
from medssl.losses.semi_supervised import LossTerm, SemiSupervisedLoss

__all__ = ["SemiSupervisedTrainer", "prepare_unlabeled_batch"]


def prepare_unlabeled_batch(
    batchdata: dict[str, Any] | torch.Tensor, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> torch.Tensor:
    """Return the image of an unlabelled batch (a dict with ``image`` or a tensor), moved to ``device``."""
    image = batchdata[SSLKeys.IMAGE] if isinstance(batchdata, dict) else batchdata
    return image.to(device=device, non_blocking=non_blocking, **kwargs)


class _Cycle:
    """Iterate a loader for ever, starting a new pass (and a new distributed-sampler epoch) when it runs out."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.passes = 0
        self._it: Iterator | None = None

    def next(self) -> Any:
        for _ in range(2):
            if self._it is None:
                sampler = getattr(self.loader, "sampler", None)
                if isinstance(sampler, DistributedSampler):
                    sampler.set_epoch(self.passes)
                self._it = iter(self.loader)
                self.passes += 1
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise ValueError("the unlabelled data loader yields no batch: the unlabelled set is empty")


class SemiSupervisedTrainer(SupervisedTrainer):
    """Train a segmentation network on labelled and unlabelled batches in one forward pass.

    Each iteration takes a labelled batch from ``train_data_loader`` (which defines the epoch) and, when an
    ``unlabeled_data_loader`` is given, an unlabelled batch from it (cycled when shorter). Both go through the network
    together (after :class:`~medssl.engines.keys.SSLEvents` ``INPUTS_READY``, at which handlers may replace the
    inputs); the trainer then fires MONAI's ``FORWARD_COMPLETED``, at which pseudo-label handlers read
    ``UNLABELED_PRED`` and write ``PSEUDO_LABEL`` (and optionally ``PSEUDO_MASK``, ``THRESHOLD`` and extra weighted
    loss terms in ``LOSS_TERMS``). The loss is::

        supervised(pred_l, label) + w * unsupervised(pred_u, pseudo_label, mask) + sum(extra terms)

    The trainer knows no method: every extra term a handler writes into ``LOSS_TERMS`` (already weighted) is added
    as it is.

    where ``w`` is ``engine.state.unsup_weight`` (set each iteration by a weight-schedule handler; ``unsup_weight``
    otherwise). With no handler writing ``PSEUDO_LABEL`` the unsupervised term is absent, and with no unlabelled
    loader the trainer is exactly a supervised trainer: the lower bound of every experiment.

    The terms are combined by :class:`~medssl.losses.SemiSupervisedLoss`; ``engine.state.output[LOSS_TERMS]`` ends
    each iteration as a dict of 0-d tensors (``supervised`` and ``unsupervised`` as weighted in the total, each
    extra term, and ``unsup_weight`` where there is an unlabelled stream) for logging. The output stays one batch-first dict
    (``decollate=False`` by default, since the labelled and unlabelled parts have different batch sizes), and its
    tensors are detached when the iteration ends, so handlers read it as they would a MONAI trainer's output with
    ``from_engine([...])``.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as for MONAI's
            ``SupervisedTrainer``; ``loss_function`` is the supervised loss.
        unlabeled_data_loader: loader of unlabelled batches (dicts with ``image``, optionally more keys such as an
            offline ``pseudo_label``), or None for supervised training.
        unsup_loss_function: loss on pseudo-labels, called as ``f(pred_u, pseudo_label)`` or, when a handler
            writes ``PSEUDO_MASK``, ``f(pred_u, pseudo_label, mask=mask)``. Defaults to ``loss_function``.
        unsup_weight: weight of the unsupervised loss when no schedule handler sets ``engine.state.unsup_weight``.
        unlabeled_prepare_batch: turns an unlabelled batch into the image tensor on the device.
        kwargs: every other argument of ``SupervisedTrainer`` (inferer, amp, train_handlers, key_train_metric, ...).

    Raises:
        ValueError: ``unsup_weight`` is negative.

    Example::

        trainer = SemiSupervisedTrainer(
            device, 10, labelled_loader, net, opt, DiceCELoss(sigmoid=True),
            unlabeled_data_loader=unlabelled_loader, unsup_loss_function=MaskedDiceCELoss(sigmoid=True),
            train_handlers=[UnsupervisedWeightSchedule(max_weight=1.0, warmup=2, ramp=5), SegPLHandler(0.5)],
        )
        trainer.run()
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        unsup_loss_function: Callable | None = None,
        unsup_weight: float = 1.0,
        unlabeled_prepare_batch: Callable = prepare_unlabeled_batch,
        prepare_batch: Callable = default_prepare_batch,
        train_handlers: Sequence | None = None,
        decollate: bool = False,
        **kwargs: Any,
    ) -> None:
        check_positive("unsup_weight", unsup_weight, strict=False)
        if "amp" in kwargs:  # a bundle's --amp false arrives as a string
            kwargs["amp"] = check_bool("amp", kwargs["amp"])
        kwargs["event_names"] = [*(kwargs.get("event_names") or []), SSLEvents]
        if kwargs.get("compile"):
            raise ValueError("compile=True is not supported by SemiSupervisedTrainer; compile the network instead.")
        self.unlabeled_data_loader = unlabeled_data_loader
        self.unsup_loss_function = unsup_loss_function if unsup_loss_function is not None else loss_function
        self.ssl_loss = SemiSupervisedLoss(loss_function, self.unsup_loss_function)
        self.unlabeled_prepare_batch = unlabeled_prepare_batch
        self._unlabeled = _Cycle(unlabeled_data_loader) if unlabeled_data_loader is not None else None
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            prepare_batch=prepare_batch,
            train_handlers=None,
            decollate=decollate,
            **kwargs,
        )
        self.state.unsup_weight = float(unsup_weight)
        self.state.unlabeled_batch = None
        # MONAI attaches handlers before it sets ``network`` and ``optimizer``; pseudo-label handlers need both
        # (a forward hook on a layer, the threshold head in the optimiser), so they attach once the trainer is whole.
        for handler in train_handlers or ():
            handler.attach(self)

    def _forward(self, engine: SemiSupervisedTrainer, inputs: torch.Tensor, inputs_u: torch.Tensor | None) -> None:
        out = engine.state.output
        if inputs_u is None:
            out[SSLKeys.PRED] = engine.inferer(inputs, engine.network)
        elif inputs.shape[1:] == inputs_u.shape[1:]:
            # One pass over both: batch-norm statistics see labelled and unlabelled images together.
            pred = engine.inferer(torch.cat([inputs, inputs_u], dim=0), engine.network)
            out[SSLKeys.PRED], out[SSLKeys.UNLABELED_PRED] = torch.split(pred, [len(inputs), len(inputs_u)], dim=0)
        else:
            out[SSLKeys.PRED] = engine.inferer(inputs, engine.network)
            out[SSLKeys.UNLABELED_PRED] = engine.inferer(inputs_u, engine.network)

    def _compute_loss(self, engine: SemiSupervisedTrainer, targets: torch.Tensor) -> torch.Tensor:
        out = engine.state.output
        weight = float(getattr(engine.state, "unsup_weight", 1.0))
        has_pseudo = out.get(SSLKeys.PSEUDO_LABEL) is not None
        terms = engine.ssl_loss(
            out[SSLKeys.PRED],
            targets,
            pred_u=out.get(SSLKeys.UNLABELED_PRED),
            pseudo_label=out.get(SSLKeys.PSEUDO_LABEL),
            pseudo_mask=out.get(SSLKeys.PSEUDO_MASK),
            unsup_weight=weight if has_pseudo else 0.0,
        )
        total = terms.pop(LossTerm.TOTAL.value)
        terms.pop(LossTerm.KL.value, None)
        sup_weight = out.get(SSLKeys.SUPERVISED_WEIGHT)
        if sup_weight is not None:  # a handler replaced the supervised term (mixed images) or gated it off
            sup = terms[LossTerm.SUPERVISED.value]
            total = total - sup + float(sup_weight) * sup
            terms[LossTerm.SUPERVISED.value] = float(sup_weight) * sup
        # handlers hand over their own terms already weighted (a threshold's KL, a consistency loss, ...)
        for name, value in dict(out.get(SSLKeys.LOSS_TERMS) or {}).items():
            terms[name] = torch.as_tensor(value).mean()
            total = total + terms[name]
        logged = {name: value.detach() for name, value in terms.items()}
        if engine._unlabeled is not None:  # a supervised run has no unsupervised weight to log
            logged["unsup_weight"] = torch.as_tensor(weight)
        out[SSLKeys.LOSS_TERMS] = logged
        return total

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One iteration: forward labelled + unlabelled, E-step handlers, loss, backward and step.

        Raises:
            ValueError: ``batchdata`` is None or the unlabelled loader yields nothing.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) != 2:
            raise ValueError("SemiSupervisedTrainer expects prepare_batch to return (image, label).")
        inputs, targets = batch
        inputs_u = None
        if engine._unlabeled is not None:
            engine.state.unlabeled_batch = engine._unlabeled.next()
            inputs_u = engine.unlabeled_prepare_batch(
                engine.state.unlabeled_batch, engine.state.device, engine.non_blocking, **engine.to_kwargs
            )
        engine.state.output = {SSLKeys.IMAGE: inputs, SSLKeys.LABEL: targets}
        if inputs_u is not None:
            engine.state.output[SSLKeys.UNLABELED_IMAGE] = inputs_u

        acc = engine.accumulation_steps
        local_iter = engine.state.iteration - 1
        epoch_length = engine.state.epoch_length
        if epoch_length is not None:
            local_iter %= epoch_length
        should_zero_grad = local_iter % acc == 0
        should_step = (local_iter + 1) % acc == 0 or (epoch_length is not None and local_iter + 1 == epoch_length)

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        def forward_and_loss() -> torch.Tensor:
            engine.fire_event(SSLEvents.INPUTS_READY)
            out = engine.state.output  # handlers may have replaced the inputs
            self._forward(engine, out[SSLKeys.IMAGE], out.get(SSLKeys.UNLABELED_IMAGE))
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            engine.state.output[SSLKeys.LOSS] = self._compute_loss(engine, engine.state.output[SSLKeys.LABEL])
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            return engine.state.output[SSLKeys.LOSS]

        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                loss = forward_and_loss()
            engine.scaler.scale(loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            if engine.amp:
                warnings.warn("amp=True has no effect without CUDA; training in full precision.", stacklevel=2)
            loss = forward_and_loss()
            (loss / acc if acc > 1 else loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        # Nothing after the step needs the graph: drop it now rather than keep it alive until the next iteration.
        engine.state.output = {
            k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in engine.state.output.items()
        }
        return engine.state.output
