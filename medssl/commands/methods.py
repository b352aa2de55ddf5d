"""``medssl methods``: the registry of semi-supervised methods, one a line, its name first."""

from __future__ import annotations

import argparse

HELP = "list the semi-supervised methods (the names a bundle takes as ssl_method) and their settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    from medssl.methods import describe

    print("\n".join(describe()))
