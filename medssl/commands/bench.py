"""``medssl bench accuracy`` and ``medssl bench speed``: the accuracy and speed benchmarks.

Light at import time, as every command module: the choices of the options (presets, tasks, methods, tracks, phases,
losses) are read from the benchmark modules only when a value is checked or the help is printed, and the benchmarks
run from :func:`run`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

HELP = "accuracy and speed benchmarks"
ACCURACY_OUT = "benchmarks/results/accuracy"
SPEED_OUT = "benchmarks/results/speed"


class _Choices:
    """Choices that argparse reads from a benchmark module only when it checks a value or prints them."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __contains__(self, value: object) -> bool:
        return value in self._load()


def _names(module: str, attribute: str, leave_out: tuple[str, ...] = (), sort: bool = True) -> _Choices:
    """The names in ``module.attribute`` (a dict's keys, a tuple's items) but ``leave_out``, read when needed."""

    def load() -> list[str]:
        names = [n for n in getattr(importlib.import_module(module), attribute) if n not in leave_out]
        return sorted(names) if sort else names

    return _Choices(load)


def _shape(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1x256x256x200, got '{text}'") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got '{text}'")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-commands ``accuracy`` and ``speed`` with their options."""
    sub = parser.add_subparsers(dest="benchmark", required=True)
    _add_accuracy(sub.add_parser(
        "accuracy", help="the papers' protocol: every method, labelled fraction and seed",
        description="Accuracy benchmark: the protocol of the pseudo-label papers on medssl's tasks.",
    ))  # fmt: skip
    _add_speed(sub.add_parser(
        "speed", help="cost of an SSL iteration, sliding-window inference throughput, peak memory",
        description="Speed benchmark: what semi-supervised training and medssl's inference cost, measured side by "
        "side, as ratios.",
    ))  # fmt: skip


def _add_accuracy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--track", choices=_names("medssl.bench.tracks", "TRACKS"), metavar="TRACK", default=None,
        help="a real-data track (instead of the phantom presets), one of %(choices)s: acdc needs --data, an "
        "SSL4MIS-layout ACDC folder",
    )  # fmt: skip
    parser.add_argument(
        "--protocol", default="cpu",
        help="the track's protocol: cpu, paper or smoke (la also cpu_long, its cpu protocol at 6000 iterations; "
        "default cpu)",
    )  # fmt: skip
    parser.add_argument("--data", default=None, help="the track's real data folder")
    parser.add_argument(
        "--setting", action="append", help="labelled setting of a track (acdc: 3 or 7 patients); repeatable"
    )
    parser.add_argument("--report", action="store_true", help="with --track: only write the report of finished runs")
    parser.add_argument(
        "--export", default=None, metavar="DIR", help="with --track: also copy each finished run's record (result, "
        "time, validation curve, per-case test scores; no checkpoints) to DIR/<protocol> and write the report there; "
        "copied back into --out, the records make a later sitting skip those runs",
    )  # fmt: skip
    parser.add_argument("--preset", choices=_names("medssl.bench.presets", "PRESETS"), metavar="PRESET",
                        default="small", help="%(choices)s (default %(default)s)")  # fmt: skip
    parser.add_argument("--out", default=None, help=f"results folder (default {ACCURACY_OUT}[/<track>])")
    parser.add_argument("--task", action="append", choices=_names("medssl.workflows.tasks", "TASKS", ("brats3d",)),
                        metavar="TASK", help="%(choices)s; repeat for several")  # fmt: skip
    parser.add_argument("--datalist", default=None, help="real data prepared with `medssl prepare` (one --task)")
    parser.add_argument("--method", action="append", choices=_names("medssl.workflows.tasks", "METHODS"),
                        metavar="METHOD", help="%(choices)s; repeat for several")  # fmt: skip
    parser.add_argument("--fraction", action="append", type=float, help="labelled fraction; repeat for several")
    parser.add_argument("--seed", action="append", type=int, help="repeat for several")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per run (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument(
        "--jobs", type=int, default=None, help="(task, seed) chains run side by side (default: the preset's)"
    )
    parser.add_argument(
        "--rescore-robustness",
        action="store_true",
        help="recompute the robustness of finished runs from their best checkpoints (no training)",
    )


def _add_speed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=SPEED_OUT, help=f"output folder (default {SPEED_OUT})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds per phase)")
    parser.add_argument("--phases", nargs="+", choices=_names("medssl.bench.speed", "PHASES", sort=False),
                        metavar="PHASE", default=None, help="phases to run, of %(choices)s (default all)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--train-repeats", type=int, default=None, help="interleaved rounds of training iterations")
    parser.add_argument("--infer-repeats", type=int, default=None, help="interleaved rounds of CT inference")
    parser.add_argument("--brats-repeats", type=int, default=None, help="interleaved rounds of BraTS inference")
    parser.add_argument("--ct-shape", type=_shape, default=None, help="CT volume C x H x W x D (default 1x256x256x200)")
    parser.add_argument("--brats-shape", type=_shape, default=None, help="BraTS volume (default 4x240x240x155)")
    parser.add_argument("--robust-loss", default=None, metavar="LOSS",
                        choices=_names("medssl.methods", "ROBUST_LOSSES", sort=False),
                        help="teacher-student loss, of %(choices)s (default gce)")  # fmt: skip
    parser.add_argument("--no-isolate", action="store_true", help="run phases in this process (peak memory is shared)")
    parser.add_argument("--update", action="store_true",
                        help="keep the phases not run now from the report already in --out (rerun some phases only)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark of parsed ``args``; return the exit status."""
    if args.benchmark == "speed":
        return _speed(args)
    if args.track:
        return _track(args)
    return _accuracy(args)


def _accuracy(args: argparse.Namespace) -> int:
    out = args.out or ACCURACY_OUT
    if args.rescore_robustness:
        from medssl.bench.robustness import rescore_robustness

        rescore_robustness(args.preset, out, tasks=args.task, seeds=args.seed, device=args.device)
        print(Path(out, "table.md").read_text())
        return 0
    from medssl.bench.accuracy import run_accuracy

    runs, _ = run_accuracy(
        args.preset, out, tasks=args.task, datalist=args.datalist, device=args.device, methods=args.method,
        fractions=args.fraction, seeds=args.seed, iterations=args.iterations, jobs=args.jobs,
    )  # fmt: skip
    print(Path(out, "table.md").read_text())
    print(f"{len(runs)} runs; results in {out}")
    return 0


def _track(args: argparse.Namespace) -> int:
    """``--track NAME``: run (or finish) the asked runs, then write the report."""
    from medssl.bench.track import LOWER, UPPER, run_specs, run_track
    from medssl.bench.track_report import export_records, write_report
    from medssl.bench.tracks import TRACKS

    track = TRACKS[args.track]
    if args.protocol not in track.protocols:
        raise ValueError(
            f"protocol must be one of {sorted(track.protocols)} for track {args.track}, got {args.protocol!r}"
        )
    out = Path(args.out or f"{ACCURACY_OUT}/{args.track}")
    if not args.report:
        if not args.data:
            raise ValueError(f"--track {args.track} needs --data, the folder of its real data")
        specs = run_specs(args.method or [LOWER, UPPER], args.setting or list(track.default_settings), args.seed or [0])
        results = run_track(track, args.protocol, specs, args.data, out, args.device, args.iterations, args.jobs)
        for r in results:
            row = {k: r.get(k) for k in ("method", "setting", "seed")} | {"dice": r["test"]["val_mean_dice"]}
            print(json.dumps(row))
    print(write_report(args.track, args.protocol, out).read_text())
    if args.export:
        runs = export_records(out / args.protocol, Path(args.export) / args.protocol)
        print(f"{len(runs)} run records in {write_report(args.track, args.protocol, args.export).parent}")
    return 0


def _speed(args: argparse.Namespace) -> int:
    from medssl.bench.speed import config_from_args, run_speed
    from medssl.bench.speed_report import to_markdown

    report, json_path, md_path = run_speed(config_from_args(args), args.out, isolate=not args.no_isolate,
                                           update=args.update)  # fmt: skip
    print(to_markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0
