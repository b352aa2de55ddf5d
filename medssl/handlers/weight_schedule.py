"""Weight of the unsupervised loss over training: zero during warm-up, then a linear ramp to its maximum."""

from __future__ import annotations

from ignite.engine import Engine, Events

from medssl.checks import check_choice, check_positive

__all__ = ["UnsupervisedWeightSchedule", "ramp_weight"]


def ramp_weight(progress: float, max_weight: float, warmup: float, ramp: float) -> float:
    """Weight at ``progress`` (epochs or iterations done): 0 before ``warmup``, then linear to ``max_weight``.

    >>> [ramp_weight(t, 1.0, warmup=2, ramp=4) for t in (0, 2, 3, 6, 9)]
    [0.0, 0.0, 0.25, 1.0, 1.0]
    """
    if progress < warmup:
        return 0.0
    if ramp <= 0:
        return float(max_weight)
    return float(max_weight) * min(1.0, (progress - warmup) / ramp)


class UnsupervisedWeightSchedule:
    """Set ``engine.state.unsup_weight`` at the start of every iteration.

    Progress is counted in completed epochs (fractional within an epoch) or completed iterations, so the weight grows
    smoothly inside an epoch too. With ``start_dice``, the ramp starts as soon as the model is worth learning from:
    at the first validation whose ``metric`` reaches ``start_dice``, or that has not improved on the best for
    ``patience`` validations, and at the latest after ``warmup``.

    Args:
        max_weight: weight reached at the end of the ramp.
        warmup: length of the warm-up (weight 0), in ``unit``.
        ramp: length of the linear ramp after the warm-up, in ``unit`` (0: jump straight to ``max_weight``).
        unit: ``"epochs"`` or ``"iterations"``.
        start_dice: validation level that ends the warm-up early (None: the warm-up has its fixed length).
        evaluator: the validation engine whose ``metric`` is watched (needed with ``start_dice``).
        patience: validations without improvement that also end the warm-up (with ``start_dice``).
        metric: the watched metric.

    Raises:
        ValueError: a negative weight or length, an unknown unit, or ``start_dice`` without an evaluator.
    """

    #: the key of its state (where a validation ended the warm-up) in a method's checkpoint
    name = "weight_schedule"

    def __init__(
        self,
        max_weight: float = 1.0,
        warmup: float = 0,
        ramp: float = 0,
        unit: str = "epochs",
        start_dice: float | None = None,
        evaluator: Engine | None = None,
        patience: int = 3,
        metric: str = "val_mean_dice",
    ) -> None:
        self.max_weight = check_positive("max_weight", max_weight, strict=False)
        self.warmup = check_positive("warmup", warmup, strict=False)
        self.ramp = check_positive("ramp", ramp, strict=False)
        self.unit = check_choice("unit", unit, ("epochs", "iterations"))
        if start_dice is not None and evaluator is None:
            raise ValueError("start_dice needs the evaluator whose validation Dice it watches.")
        self.start_dice = start_dice
        self.evaluator = evaluator
        self.patience = int(check_positive("patience", patience))
        self.metric = metric
        self.started_at: float | None = None  # where the validation ended the warm-up early
        self._best, self._stale = float("-inf"), 0
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Register the schedule on ``engine`` (and, with ``start_dice``, watch its evaluator)."""
        self._trainer = engine
        engine.add_event_handler(Events.ITERATION_STARTED, self)
        if self.start_dice is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _validated(self, evaluator: Engine) -> None:
        if self.started_at is not None or self._trainer is None:
            return
        value = float(evaluator.state.metrics.get(self.metric, float("nan")))
        if value > self._best:
            self._best, self._stale = value, 0
        else:
            self._stale += 1
        if value >= self.start_dice or self._stale >= self.patience:
            done = float(self._trainer.state.iteration)  # the ramp starts with the next iteration
            self.started_at = done if self.unit == "iterations" else done / max(1, self._trainer.state.epoch_length or 1)

    def progress(self, engine: Engine) -> float:
        """Epochs or iterations completed before the current iteration."""
        done = engine.state.iteration - 1
        if self.unit == "iterations":
            return float(done)
        return done / max(1, engine.state.epoch_length or 1)

    @property
    def start(self) -> float:
        """Where the ramp starts: after ``warmup``, or earlier where the validation ended the warm-up."""
        return self.warmup if self.started_at is None else min(self.warmup, self.started_at)

    def __call__(self, engine: Engine) -> None:
        engine.state.unsup_weight = ramp_weight(self.progress(engine), self.max_weight, self.start, self.ramp)

    def state_dict(self) -> dict:
        """Where a validation ended the warm-up (NaN: not yet), for a resumed run."""
        import torch

        return {"started_at": torch.tensor(float("nan") if self.started_at is None else self.started_at),
                "best": torch.tensor(self._best), "stale": torch.tensor(self._stale)}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        started = float(state["started_at"])
        self.started_at = None if started != started else started
        self._best, self._stale = float(state["best"]), int(state["stale"])
