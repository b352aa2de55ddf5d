"""The real-data tracks: ACDC (the standard semi-supervised benchmark), LA 2018 (its 3D counterpart) and the real
BraTS folds.

Each is a :class:`~medssl.bench.track.Track`: how its data is prepared, the bundle that trains on it, its protocols
(network size, input size, optimiser, budget) and how a budget becomes bundle settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medssl.bench.track import Protocol, Track

__all__ = ["TRACKS"]


def _acdc_prepare(root: Path, out: Path) -> dict[str, Path]:
    from medssl.data.ssl4mis import prepare_ssl4mis

    wanted = {k: out / f"datalist_{k}.json" for k in ("3", "7", "all")}
    if all(p.is_file() for p in wanted.values()):
        return wanted
    return prepare_ssl4mis(root, out, labeled=(3, 7), num_classes=4)


def _iteration_budget(iterations: int, val_interval: int) -> dict[str, Any]:
    return {"iterations": iterations, "val_interval": val_interval}


_ACDC_CPU = {
    "roi_size": [128, 128],
    "num_res_units": 0,
    "optimizer_name": "adamw",
    "learning_rate": 0.001,
    "weight_decay": 0.0001,
    "batch_size": 12,
    "unlabeled_batch_size": 12,
    "num_workers": 0,
}

def _la_prepare(root: Path, out: Path) -> dict[str, Path]:
    """LA 2018 in the UA-MT layout: the first 1, 4 and 8 IDs of train.list labelled, the last 8 set aside as the
    validation volumes (LA has no validation list), the 20 of test.list scored."""
    from medssl.data.ssl4mis import prepare_ssl4mis

    wanted = {k: out / f"datalist_{k}.json" for k in ("1", "4", "8", "all")}
    if all(p.is_file() for p in wanted.values()):
        return wanted
    return prepare_ssl4mis(root, out, labeled=(1, 4, 8), num_classes=2, val_from_train=LA_VALIDATION)


#: LA volumes set aside for validation: the last of train.list.
LA_VALIDATION = 8
#: The LA CPU protocol: volumes at half resolution, 64 x 64 x 32 patches (every side a multiple of 16 for the
#: UNet's four stride-2 levels), the bundle's UNet (16-256 channels) without residual units, AdamW; each iteration
#: takes one patch of each of 4 labelled and 4 unlabelled volumes (at 1 labelled volume, 4 patches of it: a set
#: smaller than the batch is drawn again to fill it). Batches of patches of one volume (a first pilot, 4 patches of
#: one volume) left batch norm's running statistics those of no volume: the upper bound scored 0.39 validation Dice
#: in eval mode at 600 iterations where the same network in train mode scored 0.79 on training patches; at 1
#: labelled volume batch norm kept that volume's statistics (0.083), hence the bundle's instance norm (0.541 at 200).
_LA_CPU = {
    "scale": 0.5,
    "roi_size": [64, 64, 32],
    "num_res_units": 0,
    "optimizer_name": "adamw",
    "learning_rate": 0.001,
    "batch_size": 4,
    "unlabeled_batch_size": 4,
    "num_samples": 1,
    "sw_batch_size": 4,
    "num_workers": 0,
}


def _brats_prepare(root: Path, out: Path, folds: int = 4, test_cases: int = 2) -> dict[str, Path]:
    """The real BraTS folds: ``folds`` folds of ``test_cases`` test cases. Of the other cases, in sorted order after
    the test block, the second is the labelled one; the validation case is the one with the largest tumour core among
    the others (a checkpoint chosen on a case whose tumour core the models cannot find is chosen by noise: the first
    rule, validation = the first of them, gave fold 0 BraTS2021_00014, 2,559 TC voxels, which the TransBTS of the
    first CPU protocol never segmented); the rest are unlabelled, and the upper bound labels all of them but the
    validation case. Datalists ``fold<k>_1.json`` and ``fold<k>_all.json`` of 2D axial slices."""
    return _brats_folds(root, out, folds, test_cases, slices=True)


def _brats3d_prepare(root: Path, out: Path, folds: int = 4, test_cases: int = 2) -> dict[str, Path]:
    """The folds of :func:`_brats_prepare` (the same cases in each part), as datalists of whole 3D volumes."""
    return _brats_folds(root, out, folds, test_cases, slices=False)


def _brats_folds(root: Path, out: Path, folds: int, test_cases: int, slices: bool) -> dict[str, Path]:
    from medssl.data.brats import prepare_brats
    from medssl.data.datalist import case_id, load_datalist, save_datalist

    volumes = out / "volumes" / "datalist.json"
    prepared = out / "slices" / "datalist.json" if slices else volumes
    if not prepared.is_file():
        prepare_brats(root, out / "volumes", slices2d=out / "slices" if slices else None)
    entries = load_datalist(prepared)["training"]
    cases = sorted({case_id(e) for e in entries})
    if len(cases) < folds * test_cases:
        raise ValueError(f"{root}: {len(cases)} labelled cases, fewer than {folds} folds x {test_cases} test cases")
    core = _tumour_core_voxels(load_datalist(volumes)["training"])
    written: dict[str, Path] = {}
    for fold in range(folds):
        test = cases[fold * test_cases : (fold + 1) * test_cases]
        rest = cases[(fold + 1) * test_cases :] + cases[: fold * test_cases]
        validation = max((c for c in rest if c != rest[1]), key=lambda c: (core[c], c))
        train = [c for c in rest if c != validation]
        for key, labelled in (("1", [rest[1]]), ("all", train)):
            pick = lambda ids, keep_label=True: [  # noqa: E731
                e if keep_label else {k: v for k, v in e.items() if k != "label"} for e in entries if case_id(e) in ids
            ]
            unlabelled = [c for c in train if c not in labelled]
            datalist = {
                "training": pick(labelled), "unlabeled": pick(unlabelled, False), "validation": pick([validation]),
                "testing": pick(test),
                "split": {"protocol": "brats-real folds", "fold": fold, "labeled_fraction": len(labelled) / len(train),
                          "labeled": labelled, "unlabeled": unlabelled, "validation": [validation], "testing": test},
            }  # fmt: skip
            written[f"{key}@{fold}"] = save_datalist(datalist, out / f"fold{fold}_{key}.json")
    return written


def _tumour_core_voxels(volumes: list[dict[str, Any]]) -> dict[str, int]:
    """Tumour-core voxels of each case of a prepared BraTS volume datalist (its labels are in the 2018 convention)."""
    import nibabel as nib
    import numpy as np

    from medssl.data.datalist import case_id
    from medssl.transforms.brats_labels import REGION_NAMES, to_regions

    tc = REGION_NAMES.index("TC")
    return {case_id(e): int(to_regions(np.asarray(nib.load(e["label"]).dataobj))[tc].sum()) for e in volumes}


def _epoch_budget(iterations: int, val_interval: int) -> dict[str, Any]:
    """Epoch-based bundles: one epoch per validation interval, the warm-up and ramp of the unsupervised loss over
    20% of the run each from 20% on (as the iteration-based ACDC bundle)."""
    epochs = max(1, iterations // val_interval)
    return {"epochs": epochs, "val_interval": 1, "train#trainer#epoch_length": val_interval,
            "method#warmup": 0.2, "method#ramp": 0.2}  # fmt: skip


def _unet_2d(channels: list[int]) -> dict[str, Any]:
    """A MONAI 2D UNet for the 2D BraTS bundle (4 modalities in, 4 classes out), as a ``network_def`` override."""
    return {"_target_": "UNet", "spatial_dims": 2, "in_channels": 4, "out_channels": 4, "channels": channels,
            "strides": [2] * (len(channels) - 1), "num_res_units": 0}  # fmt: skip


# The bundle's TransBTS is too slow a learner for a CPU budget: sized down (8-64 channels, a 2-layer 128-wide
# transformer) it had not learned tumour core or enhancing tumour after 1000 iterations with all 5 cases labelled
# (argmax predicted neither, even on its training slices; soft Dice of ET 0.12), and at 16-128 channels its ET Dice was
# 0.04 after 400, where the 16-256 UNet of the ACDC track reached 0.56 after 600, at a third of the time per iteration.
_BRATS_CPU = {
    "roi_size": [128, 128],
    "network_def": _unet_2d([16, 32, 64, 128, 256]),
    "feature_layer": "model.1",
    "feature_channels": 32,
    "learning_rate": 0.001,
    "batch_size": 8,
    "unlabeled_batch_size": 8,
    "sw_batch_size": 16,
    "num_workers": 0,
    "cache_rate": 1.0,
}

# The 3D BraTS bundle (TransBTS) on the real folds at a CPU size: volumes at half resolution, 48^3 patches (a 96^3
# field of view of the original), the bundle's channels (16-128), the transformer narrowed (256 wide, 2 layers, MLP
# 1024), a patch of each of 2 labelled and 2 unlabelled volumes a step. Measured beside two other one-thread runs
# (fwd + bwd + AdamW, 2 patches): 5.8 s at 64^3, 1.7 s at 48^3; 8-64 channels 2.0 and 0.8 s.
_BRATS3D_CPU = {
    "scale": 0.5,
    "roi_size": [48, 48, 48],
    "embed_dim": 256,
    "num_layers": 2,
    "num_heads": 8,
    "mlp_dim": 1024,
    "optimizer_name": "adamw",
    "learning_rate": 0.001,
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_samples": 1,
    "sw_batch_size": 4,
    "num_workers": 0,
    "cache_rate": 1.0,
}

TRACKS: dict[str, Track] = {
    "acdc": Track(
        task="acdc",
        protocols={
            # 2 CPU cores: whole slices at 128 x 128, a 16-256 UNet without residual units, AdamW with poly decay
            "cpu": Protocol(5000, 200, _ACDC_CPU, "128 x 128, UNet 16-256 (no residual units), batch 12 + 12, "
                            "AdamW 1e-3 with poly decay, 5000 iterations", jobs=2),
            # the papers' GPU protocol, the bundle's defaults
            "paper": Protocol(30000, 200, {"num_workers": 4}, "256 x 256, UNet 16-256 (2 residual units), batch "
                              "12 + 12, SGD 0.01 momentum 0.9 with poly decay, 30k iterations"),
            # the paper protocol at a size that runs in seconds on a CPU (SGD, poly decay, residual units; tests)
            "smoke": Protocol(4, 2, {"num_workers": 0, "roi_size": [32, 32], "network_channels": [4, 8, 16, 32, 64],
                                     "batch_size": 2, "unlabeled_batch_size": 2, "sw_batch_size": 8},
                              "the paper protocol at 32 x 32 with a UNet of 4-64 channels, 4 iterations: a check "
                              "that its path runs end to end, not a measurement"),
        },
        prepare=_acdc_prepare,
        budget=_iteration_budget,
        default_settings=("3",),
    ),
    "la": Track(
        task="la",
        protocols={
            "cpu": Protocol(3000, 200, _LA_CPU, "volumes at half resolution, 64 x 64 x 32 patches, UNet 16-256 (no "
                            "residual units), a patch of each of 4 labelled and 4 unlabelled volumes, AdamW 1e-3 with "
                            "poly decay, 3000 iterations; scored at full resolution", jobs=2),
            # the same at twice the length, for the methods whose validation Dice still rose at 3000 iterations
            # (FixMatch, UniMatch), with the bounds at the same length
            "cpu_long": Protocol(6000, 200, _LA_CPU, "volumes at half resolution, 64 x 64 x 32 patches, UNet 16-256 "
                                 "(no residual units), a patch of each of 4 labelled and 4 unlabelled volumes, AdamW "
                                 "1e-3 with poly decay, 6000 iterations; scored at full resolution", jobs=2),
            # the papers' GPU protocol at full resolution, the bundle's defaults (a UNet of the size of their V-Net)
            "paper": Protocol(6000, 200, {"num_workers": 4},
                              "full resolution, 112 x 112 x 80 patches, UNet 16-256 (2 residual units), 2 patches of "
                              "each of 2 labelled and 2 unlabelled volumes a step, SGD 0.01 momentum 0.9 with poly "
                              "decay, 6000 iterations"),
            # 32^3 patches: instance norm needs more than one voxel at the UNet's bottom (16^3 leaves one)
            "smoke": Protocol(4, 2, {**_LA_CPU, "roi_size": [32, 32, 32], "network_channels": [4, 8, 16, 32, 64],
                                     "batch_size": 2, "unlabeled_batch_size": 2},
                              "half resolution, 32^3 patches, a UNet of 4-64 channels, 4 iterations: a check that "
                              "the path runs end to end, not a measurement"),
        },
        prepare=_la_prepare,
        budget=_iteration_budget,
        default_settings=("1",),
        # the LA papers score after keeping the largest connected component; the track's first score is without it
        post={"lcc": {"largest_component": True}},
    ),
    "brats-real": Track(
        task="brats2d",
        protocols={
            "cpu": Protocol(3000, 200, _BRATS_CPU, "2D BraTS bundle with a MONAI 2D UNet of 16-256 channels (no "
                            "residual units) in place of TransBTS, axial slices, 128 x 128 crops, batch 8 + 8, AdamW "
                            "1e-3 with cosine decay, 3000 iterations", jobs=2),
            "smoke": Protocol(4, 2, {**_BRATS_CPU, "roi_size": [32, 32], "network_def": _unet_2d([4, 8, 16]),
                                     "feature_channels": 8, "batch_size": 2, "unlabeled_batch_size": 2},
                              "32 x 32 crops, a UNet of 4-16 channels, 4 iterations: a check that the path runs"),
        },
        prepare=_brats_prepare,
        budget=_epoch_budget,
        default_settings=("1",),
        replicate="fold",
        common={"labeled_fraction": None, "val_hd95": False},
        # the labelled crops are centred half on tumour (9.5% of their voxels on the folds), the unlabelled ones drawn
        # anywhere (5.6%): alignment aligns to the labelled slices' shares under the unlabelled crop instead
        align_prior="$medssl.handlers.distribution_alignment.crop_class_shares(@split['training'], @roi_size, 4, "
        "convention=@label_convention)",
    ),
    "brats3d-real": Track(
        task="brats3d",
        protocols={
            "cpu": Protocol(2000, 200, _BRATS3D_CPU, "3D BraTS bundle (TransBTS 16-128 channels, transformer 256 wide, "
                            "2 layers, MLP 1024), volumes at half resolution, 48^3 patches, a patch of each of 2 "
                            "labelled and 2 unlabelled volumes, AdamW 1e-3 with cosine decay, 2000 iterations; scored "
                            "at full resolution"),
            "smoke": Protocol(4, 2, {**_BRATS3D_CPU, "roi_size": [16, 16, 16], "network_channels": [4, 8, 16, 32],
                                     "embed_dim": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32,
                                     "batch_size": 1, "unlabeled_batch_size": 1},
                              "half resolution, 16^3 patches, a TransBTS of 4-32 channels, 4 iterations: a check that "
                              "the path runs end to end, not a measurement"),
        },
        prepare=_brats3d_prepare,
        budget=_epoch_budget,
        default_settings=("1",),
        replicate="fold",
        common={"labeled_fraction": None, "val_hd95": False},
    ),
}
