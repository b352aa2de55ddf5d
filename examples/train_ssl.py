"""Train one semi-supervised method on synthetic lung-vessel CT and report its test Dice, with medssl's API and MONAI.

    python examples/train_ssl.py --method segpl
    python examples/train_ssl.py --method bpl --threshold-fit elbo
    python examples/train_ssl.py --method teacher_student --robust-loss gce   # trains a supervised teacher first

Every method is the same :class:`~medssl.engines.SemiSupervisedTrainer` with the handlers and unsupervised loss that
the method registry (``medssl.methods``) builds; the bundles build exactly this from their configs. Defaults are small enough
for a CPU in a few minutes; ``--size``, ``--roi`` and ``--epochs`` scale it up.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import Activations, AsDiscrete, Compose
from monai.utils import set_determinism

from medssl.data.datalist import load_datalist
from medssl.data.split import split_datalist_file
from medssl.data.synthetic import synthesize
from medssl.engines import SemiSupervisedTrainer
from medssl.handlers.learned_threshold import FITS
from medssl.device import resolve_device
from medssl.inference.predict import make_sliding_window_inferer, write_pseudolabels
from medssl.methods import REGISTRY, ROBUST_LOSSES, build_method
from medssl.networks import ThresholdHead
from medssl.transforms.presets import lung_vessel_transforms
from medssl.workflows.evaluation import build_evaluator


def loader(entries, stage, roi, pseudo_labels=False, shuffle=False):
    transform = lung_vessel_transforms(stage, roi_size=roi, num_samples=2, pseudo_labels=pseudo_labels)
    return DataLoader(Dataset(entries, transform=transform), batch_size=2, shuffle=shuffle)


def train(data, method, args, device):
    """Train ``method`` on the split ``data``; return the network."""
    roi = [args.roi] * 3
    network = UNet(3, 1, 1, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1).to(device)
    # a learned threshold reads the 16-channel decoder stage before the output layer ("model.1")
    head = ThresholdHead(3, in_channels=16).to(device) if REGISTRY[method].uses_head else None
    settings = {"warmup": 0, "ramp": 0, "threshold_fit": args.threshold_fit, "robust_loss": args.robust_loss}
    ssl = build_method(method, settings, network=network, head=head, feature_layer="model.1", run_length=args.epochs)
    params = list(network.parameters()) + (list(head.parameters()) if head is not None else []) + ssl.parameters()
    trainer = SemiSupervisedTrainer(
        device=device,
        max_epochs=args.epochs,
        train_data_loader=loader(data["training"], "train", roi, shuffle=True),
        network=network,
        optimizer=torch.optim.Adam(params, args.lr),
        loss_function=DiceCELoss(sigmoid=True),
        unlabeled_data_loader=(
            loader(data["unlabeled"], "unlabeled", roi, pseudo_labels=ssl.reads_pseudo_labels, shuffle=True)
            if ssl.uses_unlabeled
            else None
        ),
        unsup_loss_function=ssl.unsup_loss,
        train_handlers=ssl.handlers,
    )
    trainer.run()
    return network


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(REGISTRY), default="segpl")
    parser.add_argument("--robust-loss", choices=ROBUST_LOSSES, default="gce", help="teacher_student only")
    parser.add_argument("--threshold-fit", choices=FITS, default="kl_only", help="what trains bpl's threshold")
    parser.add_argument("--out", default="example_output")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--roi", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    args = parser.parse_args(argv)
    set_determinism(0)
    device = resolve_device(args.device)
    out = Path(args.out)

    dataset = synthesize("lung_vessel", cases=args.cases, size=args.size, seed=0, out=out / "data")
    split = split_datalist_file(dataset, out / "split.json", labeled_fraction=0.3, test_fraction=0.25, seed=0)
    data = load_datalist(split)
    if args.method == "teacher_student":
        # the teacher: the supervised model; its pseudo-labels of the unlabelled scans are written next to them
        teacher = train(data, "supervised", args, device)
        post = Compose([Activations(sigmoid=True), AsDiscrete(threshold=0.5)])
        inferer = make_sliding_window_inferer([args.roi] * 3, device)
        split = write_pseudolabels(teacher, split, out / "teacher", lung_vessel_transforms("infer"), inferer, post)
        data = load_datalist(split)
    network = train(data, args.method, args, device)

    evaluator = build_evaluator(
        DataLoader(Dataset(data["testing"], transform=lung_vessel_transforms("eval")), batch_size=1),
        network,
        roi_size=[args.roi] * 3,
        task="binary",
        device=device,
        output_dir=out / "test",  # per_case.csv and summary.csv
    )
    evaluator.run()
    dice = float(evaluator.state.metrics["val_mean_dice"])
    print(f"{args.method}: test Dice {dice:.3f} on {len(data['testing'])} cases (per case: {out / 'test'})")
    return dice


if __name__ == "__main__":
    main()
