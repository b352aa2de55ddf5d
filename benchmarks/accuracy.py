"""Accuracy benchmark: ``python benchmarks/accuracy.py --preset small`` (the same as ``medssl bench accuracy``).

The logic lives in :mod:`medssl.bench.accuracy`; results go to ``benchmarks/results/accuracy/`` by default.
"""

import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "accuracy", *sys.argv[1:]]))
