"""The ``medssl`` command: synth, prepare, split, pseudolabel, deploy, demo, bench.

Each sub-command is a thin layer over a function of the package; bad input ends with one line naming the file or
argument and the problem, and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from medssl.deploy import DeployUnavailableError
from medssl.errors import DataError, clear_error

__all__ = ["main", "build_parser"]


def _float_pair(text: str) -> tuple[float, float]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers like -1000,500, got {text!r}")
    return float(parts[0]), float(parts[1])


def _spacing(text: str) -> tuple[float, float, float] | None:
    if text.lower() in ("none", "keep"):
        return None
    parts = [float(p) for p in text.replace(",", " ").split() if p]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected one or three spacings in mm, or 'keep', got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def _config_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. roi_size=[64,64,64], got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()  # a plain string such as a path, or a "$..." config expression
    return key.strip(), parsed


def _cmd_synth(args: argparse.Namespace) -> None:
    from medssl.data.synthetic import synthesize

    path = synthesize(task=args.task, cases=args.cases, size=args.size, seed=args.seed, out=args.out)
    print(f"wrote {path}")


def _cmd_prepare_brats(args: argparse.Namespace) -> None:
    from medssl.data.brats import prepare_brats

    path = prepare_brats(
        root=args.root,
        out=args.out,
        label_convention=args.label_convention,
        slices2d=args.slices2d,
        min_brain_fraction=args.min_brain_fraction,
    )
    print(f"wrote {path}")
    if args.slices2d:
        print(f"wrote {args.slices2d}/datalist.json")


def _cmd_prepare_lung(args: argparse.Namespace) -> None:
    from medssl.data.lung_ct import prepare_lung_vessel_ct

    path = prepare_lung_vessel_ct(
        args.root, args.out, spacing=args.spacing, window=args.window, lung_masks=args.lung_masks, margin_mm=args.margin_mm
    )
    print(f"wrote {path}")


def _cmd_prepare_ssl4mis(args: argparse.Namespace) -> None:
    from medssl.data.ssl4mis import prepare_ssl4mis

    written = prepare_ssl4mis(args.root, args.out, labeled=args.labeled or [3, 7], num_classes=args.num_classes,
                              layout=args.layout)  # fmt: skip
    for path in written.values():
        print(f"wrote {path}")


def _cmd_split(args: argparse.Namespace) -> None:
    from medssl.data.split import split_datalist_file

    path = split_datalist_file(
        args.datalist,
        args.out,
        labeled_fraction=args.labeled_fraction,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    print(f"wrote {path}")


def _cmd_pseudolabel(args: argparse.Namespace) -> None:
    from medssl.inference.bundle import load_bundle_inference
    from medssl.inference.predict import write_pseudolabels

    teacher = load_bundle_inference(
        args.bundle, checkpoint=args.checkpoint, device=args.device, overrides=dict(args.override or [])
    )
    path = write_pseudolabels(
        teacher.network,
        args.datalist,
        args.out,
        teacher.preprocessing,
        teacher.inferer,
        teacher.postprocessing,
        device=teacher.device,
    )
    print(f"wrote {path}")


def _cmd_deploy_run(args: argparse.Namespace) -> None:
    from medssl.deploy.run import run_deploy  # checks for the deploy extra before the DICOM path needs it

    written = run_deploy(
        args.bundle,
        args.input,
        args.output,
        checkpoint=args.checkpoint,
        device=args.device,
        series_uid=args.series_uid,
        overrides=dict(args.override or []),
    )
    for path in written:
        print(f"wrote {path}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from medssl.demo import run_demo

    run_demo(out=args.out, minutes=args.minutes, device=args.device, seed=args.seed, iterations=args.iterations)


def _run_bench(name: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(f"medssl.bench.{name}")
    parser = argparse.ArgumentParser(prog=f"medssl bench {name}", description=module.__doc__.splitlines()[0])
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return module.run(args)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"medssl bench {name}: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medssl`` command."""
    parser = argparse.ArgumentParser(prog="medssl", description="Semi-supervised medical image segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic phantom dataset (NIfTI + dataset.json)")
    p.add_argument("--task", choices=["lung_vessel", "brats"], required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--size", type=int, default=64, help="voxels per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_synth)

    prep = sub.add_parser("prepare", help="turn a public dataset into a MONAI datalist")
    psub = prep.add_subparsers(dest="source", required=True)
    p = psub.add_parser("brats", help="a BraTS 2018-2021 or 2023 folder")
    p.add_argument("--root", required=True, help="folder of case folders")
    p.add_argument("--out", required=True)
    p.add_argument("--label-convention", choices=["2018", "2023", "msd", "2015", "contiguous"], default="2018")
    p.add_argument("--slices2d", default=None, help="also export axial slices for the 2D bundle to this folder")
    p.add_argument("--min-brain-fraction", type=float, default=0.1)
    p.set_defaults(func=_cmd_prepare_brats)
    p = psub.add_parser("lung-vessel-ct", help="CT + vessel masks (NIfTI, MHA, NRRD or DICOM series)")
    p.add_argument("--root", required=True, help="folder with images/, labels/ and optional lungs/")
    p.add_argument("--out", required=True)
    p.add_argument("--spacing", type=_spacing, default=(1.0, 1.0, 1.0), help="mm, one or three values, or 'keep'")
    p.add_argument("--window", type=_float_pair, default=(-1000.0, 500.0), help="HU window, e.g. -1000,500")
    p.add_argument("--lung-masks", default=None, help="folder of lung masks (default: ROOT/lungs when present)")
    p.add_argument("--margin-mm", type=float, default=10.0, help="margin around the lung bounding box")
    p.set_defaults(func=_cmd_prepare_lung)
    p = psub.add_parser("ssl4mis", help="an HDF5 folder in the SSL4MIS layout (ACDC slices, LA / BraTS 2019 volumes)")
    p.add_argument("--root", required=True, help="folder with data/ and the list files (train_slices.list, ...)")
    p.add_argument("--out", required=True, help="output folder: images/, labels/, datalist_<k>.json, datalist_all.json")
    p.add_argument("--labeled", action="append", type=int,
                   help="labelled patients (2D layout) or cases (3D layout) of a datalist; repeatable (default 3 and 7)")
    p.add_argument("--num-classes", type=int, default=4, help="labels lie in 0..N-1 (ACDC 4, LA 2)")
    p.add_argument("--layout", choices=["auto", "2d", "3d"], default="auto")
    p.set_defaults(func=_cmd_prepare_ssl4mis)
    p = psub.add_parser("synthetic", help="medssl's synthetic phantoms (same as 'medssl synth')")
    p.add_argument("--task", choices=["lung_vessel", "brats"], required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("split", help="labelled / unlabelled / validation / test split of a datalist")
    p.add_argument("--datalist", required=True)
    p.add_argument("--labeled-fraction", type=float, required=True)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("pseudolabel", help="write a teacher bundle's pseudo-labels for the unlabelled cases")
    p.add_argument("--bundle", required=True, help="the teacher's bundle folder")
    p.add_argument("--checkpoint", default=None, help="teacher weights (default: BUNDLE/models/model_best.pt)")
    p.add_argument("--datalist", required=True, help="a split datalist with 'unlabeled' cases")
    p.add_argument("--out", required=True, help="folder for pseudo_labels/ and the new datalist.json")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--override",
        action="append",
        type=_config_override,
        metavar="KEY=VALUE",
        help="override an inference.json setting, as for the teacher's training, e.g. roi_size=[64,64,64] "
        "(the value is read as a Python literal, else kept as text); repeatable",
    )
    p.set_defaults(func=_cmd_pseudolabel)

    dep = sub.add_parser("deploy", help="run a trained bundle as a MONAI Deploy application (needs the deploy extra)")
    dsub = dep.add_subparsers(dest="action", required=True)
    p = dsub.add_parser("run", help="DICOM series in, DICOM SEG + NIfTI out (NIfTI in, NIfTI out also works)")
    p.add_argument("--bundle", required=True, help="a trained bundle folder")
    p.add_argument("--input", required=True, help="a DICOM folder, a NIfTI file or a folder of NIfTI files")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="weights: a checkpoint or a TorchScript model.ts (default: BUNDLE/models/model_best.pt)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--series-uid", default=None, help="the SeriesInstanceUID to segment when several series match")
    p.add_argument("--override", action="append", type=_config_override, metavar="KEY=VALUE",
                   help="override an inference.json setting, e.g. roi_size=[64,64,64]; repeatable")
    p.set_defaults(func=_cmd_deploy_run)

    p = sub.add_parser("demo", help="the main job on synthetic lung-vessel data")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--minutes", type=float, default=10.0, help="approximate time budget; sets the iterations")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per method (instead of --minutes)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="accuracy and speed benchmarks")
    bsub = bench.add_subparsers(dest="benchmark", required=True)
    for name, help_text in (
        ("accuracy", "the papers' protocol: every method, labelled fraction and seed"),
        ("speed", "cost of an SSL iteration, sliding-window inference throughput, peak memory"),
    ):
        # its options are parsed by the benchmark module itself (see main), so that other commands stay light
        bsub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medssl`` command; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in ("accuracy", "speed"):
        return _run_bench(argv[1], argv[2:])
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, ValueError, TypeError, FileNotFoundError, DeployUnavailableError) as e:
        print(f"medssl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # MONAI wraps a transform's or a config expression's error in a RuntimeError: report the cause it wraps
        clear = clear_error(e)
        if clear is None:
            raise
        print(f"medssl {args.command}: error: {clear}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
