"""Speed benchmark of medssl (issue 5): ``python benchmarks/speed.py [--quick] [--device auto|cpu|cuda] [--out DIR]``.

The logic lives in :mod:`medssl.bench.speed` (also ``medssl bench speed``); results go to
``benchmarks/results/speed/`` by default.
"""

from __future__ import annotations

import sys

from medssl.bench.speed import main

if __name__ == "__main__":
    sys.exit(main())
