"""``medssl prepare``: turn a public dataset into a MONAI datalist (one sub-command per source)."""

from __future__ import annotations

import argparse

from medssl.commands import synth
from medssl.commands._arguments import add_synth_arguments, float_pair, spacing

HELP = "turn a public dataset into a MONAI datalist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", required=True)
    p = sub.add_parser("brats", help="a BraTS 2018-2021 or 2023 folder")
    p.add_argument("--root", required=True, help="folder of case folders")
    p.add_argument("--out", required=True)
    p.add_argument("--label-convention", choices=["2018", "2023", "msd", "2015", "contiguous"], default="2018")
    p.add_argument("--slices2d", default=None, help="also export axial slices for the 2D bundle to this folder")
    p.add_argument("--min-brain-fraction", type=float, default=0.1)
    p.set_defaults(source_run=_brats)
    p = sub.add_parser("lung-vessel-ct", help="CT + vessel masks (NIfTI, MHA, NRRD or DICOM series)")
    p.add_argument("--root", required=True, help="folder with images/, labels/ and optional lungs/")
    p.add_argument("--out", required=True)
    p.add_argument("--spacing", type=spacing, default=(1.0, 1.0, 1.0), help="mm, one or three values, or 'keep'")
    p.add_argument("--window", type=float_pair, default=(-1000.0, 500.0), help="HU window, e.g. -1000,500")
    p.add_argument("--lung-masks", default=None, help="folder of lung masks (default: ROOT/lungs when present)")
    p.add_argument("--margin-mm", type=float, default=10.0, help="margin around the lung bounding box")
    p.set_defaults(source_run=_lung)
    p = sub.add_parser("ssl4mis", help="an HDF5 folder in the SSL4MIS layout (ACDC slices, LA / BraTS 2019 volumes)")
    p.add_argument("--root", required=True, help="folder with data/ and the list files (train_slices.list, ...)")
    p.add_argument("--out", required=True, help="output folder: images/, labels/, datalist_<k>.json, datalist_all.json")
    p.add_argument("--labeled", action="append", type=int,
                   help="labelled patients (2D layout) or first cases of train.list (3D layout) of a datalist; "
                   "repeatable (default: 3 and 7 for the 2D layout, as ACDC; 1, 4 and 8 for the 3D layout, as LA)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="labels lie in 0..N-1 (default: 4 for the 2D layout, as ACDC; 2 for the 3D layout, as LA)")
    p.add_argument("--layout", choices=["auto", "2d", "3d"], default="auto")
    p.add_argument("--val-from-train", type=int, default=0, metavar="N",
                   help="3D layout without a validation list (LA): the last N IDs of train.list become the validation "
                   "set, labelled by no setting (default 0; refused when the root has val.list)")
    p.set_defaults(source_run=_ssl4mis)
    p = sub.add_parser("synthetic", help="medssl's synthetic phantoms (same as 'medssl synth')")
    add_synth_arguments(p)
    p.set_defaults(source_run=synth.run)


def run(args: argparse.Namespace) -> None:
    args.source_run(args)


def _brats(args: argparse.Namespace) -> None:
    from medssl.data.brats import prepare_brats

    path = prepare_brats(args.root, args.out, label_convention=args.label_convention, slices2d=args.slices2d,
                         min_brain_fraction=args.min_brain_fraction)  # fmt: skip
    print(f"wrote {path}")
    if args.slices2d:
        print(f"wrote {args.slices2d}/datalist.json")


def _lung(args: argparse.Namespace) -> None:
    from medssl.data.lung_ct import prepare_lung_vessel_ct

    print(f"wrote {prepare_lung_vessel_ct(args.root, args.out, spacing=args.spacing, window=args.window, lung_masks=args.lung_masks, margin_mm=args.margin_mm)}")


def _ssl4mis(args: argparse.Namespace) -> None:
    from medssl.data.ssl4mis import prepare_ssl4mis

    written = prepare_ssl4mis(args.root, args.out, labeled=args.labeled, num_classes=args.num_classes,
                              layout=args.layout, val_from_train=args.val_from_train)  # fmt: skip
    for path in written.values():
        print(f"wrote {path}")
