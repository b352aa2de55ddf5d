"""Accuracy benchmark: ``python benchmarks/accuracy.py --preset small`` (the same as ``medssl bench accuracy``)."""

import sys

from medssl.bench.accuracy import main

if __name__ == "__main__":
    sys.exit(main())
