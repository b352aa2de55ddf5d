"""``medssl split``: a reproducible labelled / unlabelled / validation / test split of a datalist."""

from __future__ import annotations

import argparse

HELP = "labelled / unlabelled / validation / test split of a datalist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--labeled-fraction", type=float, required=True)
    parser.add_argument("--val-fraction", type=float, default=0.0)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    from medssl.data.split import split_datalist_file

    path = split_datalist_file(args.datalist, args.out, labeled_fraction=args.labeled_fraction,
                               val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)  # fmt: skip
    print(f"wrote {path}")
