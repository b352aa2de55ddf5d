"""``medssl demo``: the main job, on synthetic lung-vessel data that medssl generates."""

from __future__ import annotations

import argparse

from medssl.commands._arguments import add_variation_argument

HELP = "the main job on synthetic lung-vessel data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--minutes", type=float, default=10.0, help="approximate time budget; sets the iterations")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations per method (instead of --minutes)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    add_variation_argument(parser, default="scanner")  # medssl.demo.DEMO_VARIATION, without importing torch here
    parser.add_argument(
        "--gap",
        action="store_true",
        help="instead of the demo, train only the supervised model at 30%% labelled and with all labelled (same "
        "budget, --iterations, default 700) and report the gap that unlabelled cases could close",
    )


def run(args: argparse.Namespace) -> None:
    from medssl.demo import GAP_ITERATIONS, label_gap, run_demo

    if args.gap:
        label_gap(
            out=args.out, iterations=args.iterations or GAP_ITERATIONS, device=args.device, seed=args.seed,
            variation=args.variation,
        )  # fmt: skip
        return
    run_demo(
        out=args.out, minutes=args.minutes, device=args.device, seed=args.seed, iterations=args.iterations,
        variation=args.variation,
    )  # fmt: skip
