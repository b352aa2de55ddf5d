"""``medssl pseudolabel``: write a teacher bundle's pseudo-labels for the unlabelled cases of a datalist."""

from __future__ import annotations

import argparse

from medssl.commands._arguments import add_override

HELP = "write a teacher bundle's pseudo-labels for the unlabelled cases"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="the teacher's bundle folder (or a shipped bundle's name)")
    parser.add_argument("--checkpoint", default=None, help="teacher weights (default: BUNDLE/models/model_best.pt)")
    parser.add_argument("--datalist", required=True, help="a split datalist with 'unlabeled' cases")
    parser.add_argument("--out", required=True, help="folder for pseudo_labels/ and the new datalist.json")
    parser.add_argument("--device", default=None)
    add_override(parser, "an inference.json setting, as for the teacher's training")


def run(args: argparse.Namespace) -> None:
    from medssl.inference.predict import write_pseudolabels
    from medssl.workflows.bundle import load_bundle_inference

    teacher = load_bundle_inference(args.bundle, checkpoint=args.checkpoint, device=args.device,
                                    overrides=dict(args.override or []))  # fmt: skip
    path = write_pseudolabels(teacher.network, args.datalist, args.out, teacher.preprocessing, teacher.inferer,
                              teacher.postprocessing, device=teacher.device)  # fmt: skip
    print(f"wrote {path}")
