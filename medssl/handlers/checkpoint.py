"""Checkpoints that survive a crash: atomic saves of everything needed to resume, and safe, clear loading.

MONAI's ``CheckpointSaver`` writes in place (ignite's ``DiskSaver`` with ``atomic=False``), so a kill during a save
can leave a truncated file under the final name. Here every save goes to a temporary file in the same folder and is
renamed over the old one: at any moment the folder holds the previous or the new checkpoint, never a corrupt one.
Loading uses ``torch.load(weights_only=True)`` (through MONAI's ``CheckpointLoader``) and turns its failures into
errors that name the file and the problem.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.handlers import CheckpointLoader
from monai.transforms import Randomizable, Transform

from medssl.checkpoints import NetworkSettings, SettingsMismatch, load_state_dict_file
from medssl.checks import check_bool, check_choice, check_positive
from medssl.data.io import atomic_path
from medssl.errors import DataError

__all__ = ["RNGState", "AtomicCheckpointSaver", "SafeCheckpointLoader", "resume_handlers", "export_model"]


def _randomizables(obj: Any, seen: set[int]) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``obj`` (a dataset, a ``Compose``, a transform), in a fixed order."""
    if obj is None or id(obj) in seen:
        return []
    seen.add(id(obj))
    found = [obj] if isinstance(obj, Randomizable) else []
    children = [getattr(obj, "transform", None)] if isinstance(obj, Dataset) else []
    if isinstance(obj, (Randomizable, Transform)):
        for value in vars(obj).values():
            children.extend(value if isinstance(value, (list, tuple)) else [value])
    for child in children:
        if isinstance(child, (Dataset, Randomizable, Transform)):
            found.extend(_randomizables(child, seen))
    return found


class RNGState:
    """The random number generators of Python, numpy and torch (CPU and CUDA) as a checkpointable object.

    MONAI's random transforms keep their own numpy generators, seeded once when a ``DataLoader`` without workers is
    built, and a loader may draw its shuffles from a ``torch.Generator`` of its own
    (:func:`medssl.data.loaders.stream_generator`); pass the loaders (or datasets, or transforms) whose generators a
    resumed run must continue, so that a run resumed from an epoch boundary draws the same batches and patches as an
    uninterrupted one. Its state dict holds only tensors, ints and strings, so it loads with
    ``torch.load(weights_only=True)``.

    Args:
        sources: data loaders (their dataset's transforms and their ``generator``), datasets, ``Compose`` objects or
            transforms whose random generators are saved too; None is skipped.
    """

    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def _transforms(self) -> list[Randomizable]:
        seen: set[int] = set()
        return [t for s in self.sources for t in _randomizables(getattr(s, "dataset", s), seen)]

    def _generators(self) -> list[torch.Generator]:
        found = [getattr(s, "generator", None) for s in self.sources]
        return [g for g in found if isinstance(g, torch.Generator)]

    def state_dict(self) -> dict[str, Any]:
        """Current generator states."""
        version, py_state, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": torch.tensor(py_state, dtype=torch.int64),
            "python_version": version,
            "python_gauss": -1.0 if gauss is None else float(gauss),
            "numpy_name": str(name),
            "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss),
            "numpy_cached": float(cached),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        for i, t in enumerate(self._transforms()):
            _, t_keys, t_pos, t_has_gauss, t_cached = t.R.get_state()
            state[f"transform{i}_keys"] = torch.from_numpy(np.asarray(t_keys, dtype=np.int64))
            state[f"transform{i}_pos"] = int(t_pos)
            state[f"transform{i}_gauss"] = (int(t_has_gauss), float(t_cached))
        for i, g in enumerate(self._generators()):
            state[f"generator{i}"] = g.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore generator states saved by :meth:`state_dict`."""
        gauss = float(state["python_gauss"])
        random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python"].tolist()), None if gauss < 0 else gauss))
        np.random.set_state(
            (
                state["numpy_name"],
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(state["numpy_has_gauss"]),
                float(state["numpy_cached"]),
            )
        )
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        for i, t in enumerate(self._transforms()):
            if f"transform{i}_keys" not in state:  # a checkpoint saved with fewer (or no) transforms
                break
            has_gauss, cached = state[f"transform{i}_gauss"]
            keys = state[f"transform{i}_keys"].numpy().astype(np.uint32)
            t.R.set_state(("MT19937", keys, int(state[f"transform{i}_pos"]), int(has_gauss), float(cached)))
        for i, g in enumerate(self._generators()):
            if f"generator{i}" in state:  # absent from checkpoints of loaders that drew from the global generator
                g.set_state(state[f"generator{i}"].cpu())


class AtomicCheckpointSaver:
    """Save ``save_dict`` atomically: the last state every ``every_n_epochs`` epochs, or the best by a metric.

    ``mode="last"``: attach to the trainer; after every ``every_n_epochs`` epochs (and when training completes) the
    state goes to ``save_dir/filename``, replacing the previous one. ``mode="best"``: attach to the evaluator; after
    each evaluation whose ``key_metric_name`` beats every earlier one, the state goes to ``save_dir/filename``.

    Every object of ``save_dict`` needs ``state_dict()`` (modules, optimisers, schedulers, engines,
    :class:`RNGState`). A ``best`` saver is itself checkpointable (its best metric): put it in the ``last`` saver's
    ``save_dict`` so that a resumed run does not take its first evaluation for the best.

    Args:
        save_dir: checkpoint folder.
        save_dict: name -> object to save.
        filename: file name (default ``model_last.pt`` or ``model_best.pt``).
        mode: ``"last"`` or ``"best"``.
        key_metric_name: metric compared in ``best`` mode (default: the engine's key metric).
        every_n_epochs: interval of ``last`` saves.
        engine_key: in ``last`` mode, also save the state of the engine it attaches to under this name (epoch,
            iteration), so that a config needs no reference from the trainer's handlers back to the trainer.

    Raises:
        ValueError: an unknown mode or a non-positive interval.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str | None = None,
        mode: str = "last",
        key_metric_name: str | None = None,
        every_n_epochs: int = 1,
        engine_key: str | None = "trainer",
    ) -> None:
        self.engine_key = engine_key
        self.mode = check_choice("mode", mode, ("last", "best"))
        self.every_n_epochs = int(check_positive("every_n_epochs", every_n_epochs))
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename or f"model_{mode}.pt"
        self.key_metric_name = key_metric_name
        self.best: float | None = None
        self.logger = logging.getLogger("medssl.checkpoint")

    @property
    def path(self) -> Path:
        """Where the checkpoint is written."""
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        """Save after epochs (``last``) or evaluations (``best``) of ``engine``."""
        if self.mode == "last":
            if self.engine_key:
                self.save_dict.setdefault(self.engine_key, engine)
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self.save)
            engine.add_event_handler(Events.COMPLETED, self.save)
        else:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_save_best)

    def save(self, engine: Engine | None = None) -> Path:
        """Write the checkpoint now (atomically); return its path."""
        # a DDP / DataParallel wrapper is saved as the network it wraps, so the file loads into a plain network
        state = {name: getattr(obj, "module", obj).state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        return self.path

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The best metric so far (NaN before the first save), so that a resumed run keeps comparing against it."""
        return {"best": torch.tensor(float("nan") if self.best is None else self.best, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the best metric saved by :meth:`state_dict`."""
        best = float(state["best"])
        self.best = None if np.isnan(best) else best

    def _maybe_save_best(self, engine: Engine) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise ValueError(f"AtomicCheckpointSaver(mode='best') needs the metric '{name}' on the evaluator.")
        value = float(engine.state.metrics[name])
        if not np.isfinite(value):
            return
        if self.best is None or value > self.best:
            self.best = value
            self.save(engine)
            self.logger.info(f"saved best checkpoint ({name}={value:.4f}) to {self.path}")


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (``weights_only=True``) with errors that name the file and the problem.

    A missing, truncated or unsafe file, and a checkpoint of another network (missing or unexpected keys, other
    shapes), end with a :class:`~medssl.errors.DataError` instead of a traceback from inside PyTorch.

    Args:
        engine_key: also restore the engine it attaches to from this entry of the checkpoint (as
            :class:`AtomicCheckpointSaver` writes it).
        args, kwargs: as for MONAI's ``CheckpointLoader``.
    """

    def __init__(self, *args: Any, engine_key: str | None = "trainer", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Load at the start of ``engine``'s run, its own state included."""
        if self.engine_key:
            self.load_dict.setdefault(self.engine_key, engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        saved = load_state_dict_file(self.load_path, self.map_location)  # clear errors for unreadable files
        # a checkpoint written before its network's settings were saved with it resumes without the check
        unchecked = {k: v for k, v in self.load_dict.items() if isinstance(v, NetworkSettings) and k not in saved}
        for k in unchecked:
            del self.load_dict[k]
        try:
            super().__call__(engine)
        except SettingsMismatch as e:
            raise DataError(self.load_path, f"checkpoint of another network: {e}") from None
        except (RuntimeError, KeyError) as e:
            raise DataError(
                self.load_path,
                f"checkpoint does not fit this network or training set-up ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]})",
            ) from None
        finally:
            self.load_dict.update(unchecked)


def resume_handlers(
    resume: bool, checkpoint: str | os.PathLike, load_dict: Mapping[str, Any], map_location: Any = None
) -> list[SafeCheckpointLoader]:
    """A loader of ``checkpoint`` when ``resume`` is set and the file exists; nothing otherwise.

    So a bundle run with ``--resume true`` continues from its last checkpoint, and starts fresh (with a log line)
    when there is none yet (``resume`` may be the string ``"true"`` / ``"false"`` the bundle CLI passes).
    """
    if not check_bool("resume", resume):
        return []
    if not Path(checkpoint).is_file():
        logging.getLogger("medssl.checkpoint").warning(f"resume: no checkpoint at {checkpoint}, starting from scratch")
        return []
    return [SafeCheckpointLoader(str(checkpoint), dict(load_dict), map_location=map_location)]




def export_model(ckpt_dir: str | os.PathLike, name: str = "model.pt", key: str = "model") -> Path | None:
    """Write the model-zoo weights file ``ckpt_dir/model.pt``: the plain state dict of the best checkpoint's network
    (``model_best.pt``, else ``model_last.pt``), atomically; what ``ckpt_export`` and ``inference.json`` read.

    Returns:
        the file written, or None when the run left no checkpoint.
    """
    ckpt_dir = Path(ckpt_dir)
    source = next((p for p in (ckpt_dir / "model_best.pt", ckpt_dir / "model_last.pt") if p.is_file()), None)
    if source is None:
        return None
    state = load_state_dict_file(source)
    weights = state[key] if isinstance(state, Mapping) and key in state else state
    with atomic_path(ckpt_dir / name) as tmp:
        torch.save(dict(weights), tmp)
    return ckpt_dir / name
