"""``medssl synth``: write a synthetic phantom dataset (NIfTI + dataset.json)."""

from __future__ import annotations

import argparse

from medssl.commands._arguments import add_synth_arguments

HELP = "write a synthetic phantom dataset (NIfTI + dataset.json)"
add_arguments = add_synth_arguments


def run(args: argparse.Namespace) -> None:
    from medssl.data.synthetic import synthesize

    path = synthesize(
        task=args.task, cases=args.cases, size=args.size, seed=args.seed, out=args.out, variation=args.variation
    )
    print(f"wrote {path}")
