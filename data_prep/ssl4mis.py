"""Prepare an HDF5 folder in the SSL4MIS layout (ACDC, LA, BraTS 2019) as medssl datalists: `python data_prep/ssl4mis.py --help`.

The same as `medssl prepare ssl4mis ...`; the conversion logic lives in the medssl package, so the command also works
after a plain `pip install medssl`.
"""

import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "ssl4mis", *sys.argv[1:]]))
