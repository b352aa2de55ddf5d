"""Speed benchmark of medssl (issue 5): ``python benchmarks/speed.py [--quick] [--device auto|cpu|cuda] [--out DIR]``.

The same as ``medssl bench speed``; the logic lives in :mod:`medssl.bench.speed`, and results go to
``benchmarks/results/speed/`` by default.
"""

import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "speed", *sys.argv[1:]]))
