"""How an accuracy track on real data runs (the tracks themselves, ACDC and the real BraTS folds, are in
:mod:`medssl.bench.tracks`).

A track is a real dataset, the bundle that trains on it, protocols (network size, input size, optimiser, budget) and
the runs of a comparison, one per (method, labelled setting, seed). Every run is the bundle's own ``train.json`` for
a fixed number of iterations with the learning rate decayed over exactly that length, keeps the checkpoint with the
best validation Dice, and is scored once at the end with the bundle's ``evaluate.json`` on the test cases (Dice and
HD95 per volume). Runs resume: a finished run (``result.json``) is skipped, an interrupted one continues from its
last checkpoint (the bundle's ``resume``), so a track too long for one sitting runs across several. A track may
also score each run's chosen checkpoint after other post-processing (:attr:`Track.post`, e.g. LA's largest connected
component, the LA papers' convention): the same checkpoint, chosen on validation as before, scored once more; a
finished run without such a score gets it when the run is asked for again, without training.

Layout under ``out``: ``data/`` (the converted dataset), ``<protocol>/runs/<method>/<setting>/seed<k>/`` (each run's
bundle root: ``models/``, ``eval/val_curve.csv``, ``test/per_case.csv``, ``test_<post>/per_case.csv``, ``timing.json``,
``result.json``),
``<protocol>/teachers/<setting>/seed<k>/`` (the lower bound's pseudo-labels that teacher-student runs read) and the
report (:mod:`medssl.bench.track_report`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from medssl.workflows.runs import teacher_pseudolabels
from medssl.workflows.tasks import METHODS, TASKS, reads_pseudo_labels
from medssl.data.io import exclusive, read_json, write_json
from medssl.workflows.bundle import config_workflow, device_overrides

__all__ = ["LOWER", "UPPER", "Protocol", "Track", "RunSpec", "run_one", "run_track", "run_dir_of", "run_specs"]

UPPER = "upper_bound"
LOWER = "lower_bound"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """Sizes and budget of a track's runs: the same for every method of a comparison."""

    iterations: int
    val_interval: int
    overrides: Mapping[str, Any]
    description: str
    jobs: int = 1


@dataclass(frozen=True)
class RunSpec:
    """One run: a method, a labelled setting (``"3"`` patients, ``"fold0"``, ...; ``"all"`` for the upper bound) and
    a seed."""

    method: str
    setting: str
    seed: int

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}.")


@dataclass(frozen=True)
class Track:
    """A real-data benchmark: how its data is prepared, which bundle trains, how a budget becomes bundle settings.

    A run's datalist is ``datalists["<setting>@<fold>"]`` when the track prepares one per fold (the BraTS folds), else
    ``datalists["<setting>"]``; ``"all"`` is the all-labelled datalist of the upper bound. On a track of F folds seed
    k trains fold k mod F with training seed k: seeds 0 to F-1 are the folds, seeds F to 2F-1 repeat them from other
    initialisations and other draws of the loaders.
    """

    task: str  # a key of medssl.workflows.runs.TASKS
    protocols: Mapping[str, Protocol]
    #: (data root, output folder) -> {setting or setting@seed: datalist}
    prepare: Callable[[Path, Path], dict[str, Path]]
    #: (iterations, validation interval) -> bundle settings
    budget: Callable[[int, int], dict[str, Any]]
    default_settings: tuple[str, ...]
    #: what a seed means: "seed" (a training seed) or "fold" (a cross-validation fold, seed mod the number of folds,
    #: and the training seed)
    replicate: str = "seed"
    #: bundle settings of every protocol (the data layout the track's datalists need)
    common: Mapping[str, Any] = field(default_factory=dict)
    #: other post-processings each run's chosen checkpoint is also scored with, name -> evaluate.json settings; the
    #: scores go to ``result.json["post"][name]`` and the per-case table to ``test_<name>/``
    post: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the labelled class marginal that distribution alignment aligns to, a bundle config expression given as
    #: ``method#align_prior`` to the runs whose method aligns (None: the labelled batches' running marginal)
    align_prior: str | None = None

    def datalist(self, datalists: Mapping[str, Path], setting: str, seed: int) -> Path:
        """The datalist of a (setting, seed) run."""
        folds = [key for key in datalists if key.startswith(f"{setting}@")]
        if folds:
            return datalists[f"{setting}@{seed % len(folds)}"]
        if setting not in datalists:
            raise ValueError(f"labelled setting {setting!r} is not prepared; this track has {sorted(datalists)}")
        return datalists[setting]


def run_dir_of(root: Path, spec: RunSpec) -> Path:
    """The bundle root of ``spec``'s run (the upper bound is one run per seed, shared by every setting)."""
    setting = "all" if spec.method == UPPER else spec.setting
    return root / "runs" / spec.method / setting / f"seed{spec.seed}"


def _teacher_dir(root: Path, spec: RunSpec) -> Path:
    return root / "teachers" / spec.setting / f"seed{spec.seed}"


def _inference_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that inference.json shares with train.json (its sizes), without training and validation ones."""
    return {k: v for k, v in overrides.items() if k.split("#")[0] not in ("train", "validate")}


class _Timing:
    """Wall-clock and CPU seconds of a run, summed over the sittings it took, saved after every epoch; with
    :meth:`watch`, also the wall-clock seconds and the number of the validation passes among them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        old = read_json(path) if path.is_file() else {}
        self.base_wall, self.base_cpu = float(old.get("wall_seconds", 0.0)), float(old.get("cpu_seconds", 0.0))
        self.val_seconds, self.val_passes = float(old.get("val_seconds", 0.0)), int(old.get("val_passes", 0))
        self.sittings = int(old.get("sittings", 0)) + 1
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self._val0: float | None = None

    def watch(self, evaluator: Any) -> None:
        """Count the passes of ``evaluator`` (an ignite engine) and their wall-clock seconds."""
        evaluator.add_event_handler(Events.STARTED, self._val_started)
        evaluator.add_event_handler(Events.COMPLETED, self._val_completed)

    def _val_started(self, *_: Any) -> None:
        self._val0 = time.perf_counter()

    def _val_completed(self, *_: Any) -> None:
        if self._val0 is not None:
            self.val_seconds += time.perf_counter() - self._val0
            self.val_passes, self._val0 = self.val_passes + 1, None

    def totals(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.base_wall + time.perf_counter() - self.wall0, 1),
            "cpu_seconds": round(self.base_cpu + time.process_time() - self.cpu0, 1),
            "val_seconds": round(self.val_seconds, 3),  # a pass of a tiny smoke set takes milliseconds
            "val_passes": self.val_passes,
            "sittings": self.sittings,
            "threads": torch.get_num_threads(),
        }

    def save(self, *_: Any) -> None:
        write_json(self.totals(), self.path)


def run_one(
    track: Track,
    protocol: str,
    spec: RunSpec,
    out: str | os.PathLike,
    datalists: Mapping[str, Path],
    device: str | None = None,
    iterations: int | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train (or finish) ``spec``'s run and score its best checkpoint on the test cases; return its result.

    A run with a ``result.json`` is not trained again; it is scored with the track's other post-processings it has no
    scores of (:attr:`Track.post`) where its best checkpoint is there. Teacher-student runs first write the
    pseudo-labels of the same setting's and seed's lower bound (which must be finished) with the bundle's
    ``inference.json``.

    Raises:
        FileNotFoundError: a teacher-student run whose lower bound has no best checkpoint yet.
    """
    proto = track.protocols[protocol]
    root = Path(out) / protocol
    run_dir = run_dir_of(root, spec)
    result_path = run_dir / "result.json"
    datalist = track.datalist(datalists, "all" if spec.method == UPPER else spec.setting, spec.seed)
    # the device only: the bundle's own amp setting stays
    device_values = {k: v for k, v in device_overrides(device).items() if k == "device"}
    if result_path.is_file():
        result = read_json(result_path)
        if all(name in result.get("post", {}) for name in track.post):
            return result
        if reads_pseudo_labels(spec.method):
            datalist = _teacher_dir(root, spec) / "datalist.json"
        values = _run_values(track, proto, spec, run_dir, datalist, result["iterations"], device_values)
        return _score_post(track, values, run_dir, result)
    run_dir.mkdir(parents=True, exist_ok=True)
    iterations = iterations or proto.iterations
    if reads_pseudo_labels(spec.method):
        teacher = _teacher_dir(root, spec)
        if not (teacher / "datalist.json").is_file():
            best = run_dir_of(root, RunSpec(LOWER, spec.setting, spec.seed)) / "models" / "model_best.pt"
            if not best.is_file():
                raise FileNotFoundError(f"{best}: the teacher (lower bound) of {spec} has not been trained yet")
            teacher_pseudolabels(
                track.task, best, datalist, teacher, {**_inference_overrides(proto.overrides), **device_values}, device
            )
        datalist = teacher / "datalist.json"
    values = _run_values(track, proto, spec, run_dir, datalist, iterations, device_values)
    previous = logging.root.manager.disable
    if not verbose:  # the bundles log every few iterations; keep warnings, errors (and a progress bar on a terminal)
        logging.disable(logging.INFO)
    try:
        timing = _Timing(run_dir / "timing.json")
        bundle = TASKS[track.task].bundle
        wf = config_workflow(bundle, ["train.json"], values)
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        timing.watch(wf.parser.get_parsed_content("validate#evaluator"))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, timing.save)
        wf.run()
        timing.save()
        wf.finalize()
        metrics = _score(track, values, run_dir / "test")
    finally:
        logging.disable(previous)
    curve_path = run_dir / "eval" / "val_curve.csv"
    result = {
        "task": track.task,
        "protocol": protocol,
        "method": spec.method,
        "setting": "all" if spec.method == UPPER else spec.setting,
        "seed": spec.seed,
        "iterations": iterations,
        "test": metrics,
        **_best_validation(curve_path),
        **timing.totals(),
    }
    write_json(result, result_path)
    return _score_post(track, values, run_dir, result)


def _run_values(
    track: Track, proto: Protocol, spec: RunSpec, run_dir: Path, datalist: Path, iterations: int, device: Mapping
) -> dict[str, Any]:
    """The bundle settings of ``spec``'s run."""
    return {
        "bundle_root": str(run_dir),
        "datalist": str(datalist),
        "seed": spec.seed,
        "resume": True,
        **track.budget(iterations, proto.val_interval),
        **dict(track.common),
        **dict(proto.overrides),
        **METHODS[spec.method],
        **({"method#align_prior": track.align_prior} if track.align_prior and METHODS[spec.method].get("method#align")
           else {}),
        **device,
    }


def _score(track: Track, values: Mapping[str, Any], output_dir: Path) -> dict[str, float]:
    """Score the run's best checkpoint on the test cases with the bundle's ``evaluate.json``; the per-case table goes to
    ``output_dir``."""
    bundle = TASKS[track.task].bundle
    test = config_workflow(bundle, ["train.json", "evaluate.json"], {**values, "output_dir": str(output_dir)})
    test.initialize()
    test.run()
    metrics = {k: float(v) for k, v in test.parser.get_parsed_content("validate#evaluator").state.metrics.items()}
    test.finalize()
    return metrics


def _score_post(track: Track, values: Mapping[str, Any], run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Add the scores of the track's other post-processings that ``result`` lacks, saving it after each."""
    post = dict(result.get("post", {}))
    missing = [name for name in track.post if name not in post]
    if missing and not (run_dir / "models" / "model_best.pt").is_file():  # a record kept without its checkpoints
        logger.warning(f"{run_dir}: no models/model_best.pt to score with {', '.join(missing)}; left without them")
        return result
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        for name in missing:
            post[name] = _score(track, {**values, **track.post[name]}, run_dir / f"test_{name}")
            result = {**result, "post": post}
            write_json(result, run_dir / "result.json")
    finally:
        logging.disable(previous)
    return result


def _best_validation(curve_path: Path) -> dict[str, Any]:
    import pandas as pd

    if not curve_path.is_file():
        return {}
    curve = pd.read_csv(curve_path)
    best = curve.loc[curve["val_mean_dice"].idxmax()]
    return {"best_val_dice": float(best["val_mean_dice"]), "best_val_iteration": int(best["iteration"])}


def _worker(args: tuple) -> dict[str, Any]:
    threads, *rest = args
    if threads:
        torch.set_num_threads(threads)
    return run_one(*rest)


def run_track(
    track: Track,
    protocol: str,
    specs: Sequence[RunSpec],
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    device: str | None = None,
    iterations: int | None = None,
    jobs: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``specs`` (finished ones are read back), ``jobs`` side by side in separate processes.

    A teacher-student run waits for its lower bound; runs start in the order given. With ``jobs > 1`` each process
    gets ``cores / jobs`` torch threads (small 2D networks gain little from a second thread on a CPU).
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    out = Path(out)
    with exclusive(out / ".prepare.lock"):  # runs started side by side prepare the data once
        datalists = track.prepare(Path(data_root), out / "data")
    for s in specs:
        track.datalist(datalists, "all" if s.method == UPPER else s.setting, s.seed)  # each run has its data
    jobs = jobs or track.protocols[protocol].jobs
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    results: dict[RunSpec, dict[str, Any]] = {}
    pending = list(dict.fromkeys(specs))

    def ready(spec: RunSpec, done: set[RunSpec]) -> bool:
        if not reads_pseudo_labels(spec.method):
            return True
        lower = RunSpec(LOWER, spec.setting, spec.seed)
        return lower in done or (run_dir_of(out / protocol, lower) / "result.json").is_file()

    args = (track, protocol)
    if jobs == 1:
        for spec in sorted(pending, key=lambda s: reads_pseudo_labels(s.method)):
            results[spec] = run_one(*args, spec, out, datalists, device, iterations)
        return [results[s] for s in pending]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        running: dict[Any, RunSpec] = {}
        todo = list(pending)
        while todo or running:
            for spec in [s for s in todo if ready(s, set(results))][: jobs - len(running)]:
                todo.remove(spec)
                running[pool.submit(_worker, (threads, *args, spec, out, datalists, device, iterations))] = spec
            if not running:
                raise RuntimeError(f"runs {todo} wait for lower bounds that are not in this call")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                results[running.pop(future)] = future.result()
    return [results[s] for s in pending]


def run_specs(methods: Sequence[str], settings: Sequence[str], seeds: Sequence[int]) -> list[RunSpec]:
    """The runs of ``methods`` x ``settings`` x ``seeds``, seed by seed (the upper bound once per seed)."""
    specs = []
    for seed in seeds:
        for method in methods:
            for setting in [settings[0]] if method == UPPER else settings:
                specs.append(RunSpec(method, "all" if method == UPPER else str(setting), seed))
    return specs
