"""``medssl demo``: the main job, on synthetic lung-vessel data that medssl generates."""

from __future__ import annotations

import argparse

HELP = "the main job on synthetic lung-vessel data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--minutes", type=float, default=10.0, help="approximate time budget; sets the iterations")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations per method (instead of --minutes)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    from medssl.demo import run_demo

    run_demo(out=args.out, minutes=args.minutes, device=args.device, seed=args.seed, iterations=args.iterations)
