"""The ``medssl`` command: synth, prepare, split, pseudolabel, deploy, demo, bench, methods, bundle.

Every sub-command is a module of :mod:`medssl.commands` with ``HELP``, ``add_arguments(parser)`` and ``run(args)``,
registered here and nowhere else. Bad input ends, at the one error boundary of :func:`main`, with one line naming the
file or argument and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from medssl import __version__
from medssl.deploy import DeployUnavailableError
from medssl.errors import DataError, clear_error

__all__ = ["COMMANDS", "main", "build_parser"]

#: command name -> the module that defines it
COMMANDS = {
    "synth": "medssl.commands.synth",
    "prepare": "medssl.commands.prepare",
    "split": "medssl.commands.split",
    "pseudolabel": "medssl.commands.pseudolabel",
    "deploy": "medssl.commands.deploy",
    "demo": "medssl.commands.demo",
    "bench": "medssl.commands.bench",
    "methods": "medssl.commands.methods",
    "bundle": "medssl.commands.bundle",
}
_USER_ERRORS = (DataError, ValueError, TypeError, FileNotFoundError, FileExistsError, DeployUnavailableError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medssl`` command."""
    parser = argparse.ArgumentParser(prog="medssl", description="Semi-supervised medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medssl`` command; return its exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        status = args.run(args)
    except _USER_ERRORS as e:
        print(f"medssl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # MONAI wraps a transform's or a config expression's error in a RuntimeError: report the cause it wraps
        clear = clear_error(e)
        if clear is None:
            raise
        print(f"medssl {args.command}: error: {clear}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
