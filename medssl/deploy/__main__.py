"""``python -m medssl.deploy run --bundle B --input DIR --output DIR``: the same as ``medssl deploy run``."""

from __future__ import annotations

import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
