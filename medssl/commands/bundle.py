"""``medssl bundle``: the MONAI bundles that ship with medssl: list them, write one out to run or edit it."""

from __future__ import annotations

import argparse

HELP = "list the bundles that ship with medssl, or write one out as a folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the shipped bundles and where they are")
    p = sub.add_parser("export", help="copy a shipped bundle to OUT/<name> (as `monai.bundle download` does)")
    p.add_argument("name", help="a bundle name from `medssl bundle list`")
    p.add_argument("--out", default=".", help="folder to write the bundle folder into (default: here)")


def run(args: argparse.Namespace) -> None:
    from medssl.workflows.bundle import bundles_dir, export_bundle, list_bundles

    if args.action == "list":
        for name in list_bundles():
            print(f"{name}\t{bundles_dir() / name}")
    else:
        print(f"wrote {export_bundle(args.name, args.out)}")
