"""``medssl deploy run``: a trained bundle as a MONAI Deploy application (needs the deploy extra)."""

from __future__ import annotations

import argparse

from medssl.commands._arguments import add_override

HELP = "run a trained bundle as a MONAI Deploy application (needs the deploy extra)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("run", help="DICOM series in, DICOM SEG + NIfTI out (NIfTI in, NIfTI out also works)")
    p.add_argument("--bundle", required=True, help="a trained bundle folder")
    p.add_argument("--input", required=True, help="a DICOM folder, a NIfTI file or a folder of NIfTI files")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="weights: a checkpoint or a TorchScript model.ts (default: BUNDLE/models/model_best.pt)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--series-uid", default=None, help="the SeriesInstanceUID to segment when several series match")
    add_override(p)


def run(args: argparse.Namespace) -> None:
    from medssl.deploy.run import run_deploy  # checks for the deploy extra before the DICOM path needs it

    written = run_deploy(args.bundle, args.input, args.output, checkpoint=args.checkpoint, device=args.device,
                         series_uid=args.series_uid, overrides=dict(args.override or []))  # fmt: skip
    for path in written:
        print(f"wrote {path}")
