"""The data pipelines of medssl's tasks, as MONAI dictionary transforms, shared by bundles, the demo and benchmarks.

Stages: ``"train"`` (labelled cases: random crops around the label), ``"unlabeled"`` (images, and an offline
``pseudo_label`` when present: random crops), ``"eval"`` (whole labelled volumes) and ``"infer"`` (whole images).
2D tasks train on slices but evaluate whole scans: their ``"eval"`` stage loads the stacked slice entries of
:func:`medssl.data.slices.stack_slices` (or a volume file) as one volume, scored per scan.
Every stage validates what it loads (:class:`~medssl.transforms.validate.ValidateCased`).

BraTS labels are read in a datalist's convention (2018 by default, as ``medssl prepare brats`` writes them) and
trained on medssl's contiguous labels 0..3; offline pseudo-labels are stored in the same convention as labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    Compose,
    CopyItemsd,
    RandAdjustContrastd,
    RandGaussianSmoothd,
    RandRotate90d,
    RandRotated,
    Resized,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    FgBgToIndicesd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSpatialCropSamplesd,
    Zoomd,
)

from medssl.checks import check_choice, check_positive
from medssl.transforms.brats_labels import BratsLabelConventiond, label_values
from medssl.transforms.ct import DEFAULT_LUNG_WINDOW, CTWindowd
from medssl.transforms.slices import SliceWiseNormalizeIntensityd, StackSlicesd
from medssl.transforms.validate import ValidateCased

__all__ = [
    "STAGES",
    "STRONG_CONTRASTS",
    "STRONG_KEYS",
    "lung_vessel_transforms",
    "la_transforms",
    "brats_transforms",
    "acdc_transforms",
    "strong_views",
    "ACDC_CLASSES",
]

STAGES = ("train", "unlabeled", "eval", "infer")
#: The strong views' contrast change: a linear blend with each channel's mean, or a gamma curve over the range.
STRONG_CONTRASTS = ("linear", "gamma")
PSEUDO_KEY = "pseudo_label"
#: keys of the strongly augmented copies of an unlabelled image (weak-to-strong methods)
STRONG_KEYS = ("image_strong1", "image_strong2")


def strong_views(views: int, spatial_dims: int, contrast: str = "linear") -> list:
    """Transforms that add ``views`` strongly augmented copies of ``image`` (``image_strong1``, ...), pixel-aligned with
    it: put them after the spatial (weak) augmentation of an unlabelled pipeline.

    Each copy independently: brightness (intensity scaled by a factor in 0.5-1.5) and contrast (each channel's
    distance from its mean scaled by a factor in 0.5-1.5, clipped to the channel's range) with probability 0.8, and
    Gaussian blur (sigma 0.1-2 voxels) with probability 0.5: the strong augmentation of UniMatch for grey-level
    images (torchvision's colour jitter 0.5, whose contrast is that linear blend with the mean, and blur); the CutMix
    part is done per batch by the method. Both intensity changes are linear, so they mean the same on images scaled
    to [0, 1] and on z-scored ones with a zero background (BraTS): the background stays at zero on a whole slice and
    moves by a fraction of the channel's mean on a crop (a median of at most 0.03 on real BraTS crops). A gamma curve
    over the range does not: on a z-scored slice whose range a few bright voxels set, it moved the whole slice,
    background included, by up to 6 standard deviations.

    ``contrast="gamma"`` takes a gamma curve (0.5-1.5) over the image's range instead of the linear blend: for images
    scaled to [0, 1] whose background is the range's minimum (ACDC), where it keeps both ends and the background, and
    where it measured better (benchmarks/RESULTS.md, the ACDC track: FixMatch cut at 0.5, 0.698 over three seeds with
    the gamma, 0.625 on seed 0 with the linear blend).

    Raises:
        ValueError: ``views`` above 2, or ``contrast`` not "linear" or "gamma".
    """
    check_choice("contrast", contrast, STRONG_CONTRASTS)
    if views <= 0:
        return []
    if views > len(STRONG_KEYS):
        raise ValueError(f"at most {len(STRONG_KEYS)} strong views, got {views}.")
    keys = list(STRONG_KEYS[:views])
    xforms: list = [CopyItemsd("image", times=views, names=keys)]
    for key in keys:
        xforms += [
            RandScaleIntensityd(key, factors=0.5, prob=0.8),
            RandScaleIntensityFixedMeand(key, factors=0.5, preserve_range=True, channel_wise=True, prob=0.8)
            if contrast == "linear"
            else RandAdjustContrastd(key, gamma=(0.5, 1.5), prob=0.8),
            RandGaussianSmoothd(key, sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), sigma_z=(0.1, 2.0), prob=0.5),
        ]
    return xforms


def _check(stage: str, roi_size: Sequence[int], num_samples: int, spatial_dims: int) -> tuple[int, ...]:
    check_choice("stage", stage, STAGES)
    check_positive("num_samples", num_samples)
    if isinstance(roi_size, (str, bytes)) or not isinstance(roi_size, Sequence):
        raise TypeError(
            f"roi_size must be a list of {spatial_dims} sizes, got {type(roi_size).__name__} ({roi_size!r})."
        )
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != spatial_dims or any(r < 1 for r in roi):
        raise ValueError(f"roi_size must be {spatial_dims} positive sizes, got {tuple(roi_size)}.")
    return roi


def _crops_and_flips(
    stage: str, roi: tuple[int, ...], num_samples: int, keys: list[str], image_threshold: float, cache_indices: bool
):
    if stage != "train":
        crop = [RandSpatialCropSamplesd(keys, roi_size=roi, num_samples=num_samples, random_size=False)]
    elif cache_indices:
        # foreground/background voxel indices computed once (CacheDataset keeps them with the image), not at every
        # crop, then dropped from the patches; for 2D slices only, where they are small (for a 3D volume the int64
        # indices would take twice the memory of the cached float32 image)
        indices = ("label_fg_indices", "label_bg_indices")
        crop = [
            FgBgToIndicesd("label", image_key="image", image_threshold=image_threshold),
            RandCropByPosNegLabeld(
                keys, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=num_samples,
                fg_indices_key=indices[0], bg_indices_key=indices[1],
            ),  # fmt: skip
            DeleteItemsd(list(indices)),
        ]
    else:
        crop = [
            RandCropByPosNegLabeld(
                keys, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=num_samples,
                image_key="image", image_threshold=image_threshold,
            )  # fmt: skip
        ]
    return crop + [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(roi))]


def _stage_keys(stage: str, pseudo_labels: bool) -> tuple[list[str], list[str]]:
    """The keys a pipeline loads at ``stage`` (the image, its label where the stage has one, an offline pseudo-label
    in the unlabelled stage), and those of them that are label maps."""
    keys = ["image"] + (["label"] if stage in ("train", "eval") else [])
    keys += [PSEUDO_KEY] if pseudo_labels and stage == "unlabeled" else []
    return keys, keys[1:]


def lung_vessel_transforms(
    stage: str,
    roi_size: Sequence[int] = (96, 96, 96),
    num_samples: int = 2,
    window: Sequence[float] = DEFAULT_LUNG_WINDOW,
    pseudo_labels: bool = False,
    strong: int = 0,
) -> Compose:
    """Pipeline of the 3D lung-vessel CT task: one CT channel in HU windowed to [0, 1], binary vessel labels.

    Args:
        stage: one of :data:`STAGES`.
        roi_size: training patch size (and the smallest volume accepted for training).
        num_samples: patches per case per iteration (train and unlabelled stages).
        window: HU window mapped to [0, 1].
        pseudo_labels: the unlabelled cases carry an offline ``pseudo_label`` (teacher-student).
        strong: strongly augmented copies of each unlabelled patch (:func:`strong_views`).
    """
    roi = _check(stage, roi_size, num_samples, 3)
    keys, label_keys = _stage_keys(stage, pseudo_labels)
    xforms = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=None),
        ValidateCased(
            "image",
            label_keys,
            spatial_dims=3,
            channels=1,
            label_values=(0, 1),
            min_shape=roi if stage in ("train", "unlabeled") else None,
        ),
        CTWindowd("image", window=window),
        EnsureTyped(keys, track_meta=True),
    ]
    if stage in ("train", "unlabeled"):
        xforms += _crops_and_flips(stage, roi, num_samples, keys, image_threshold=0.0, cache_indices=False)
    if stage == "unlabeled":
        xforms += strong_views(strong, 3)
    return Compose(xforms)


def la_transforms(
    stage: str,
    roi_size: Sequence[int] = (112, 112, 80),
    num_samples: int = 2,
    scale: float = 1.0,
    pseudo_labels: bool = False,
    strong: int = 0,
) -> Compose:
    """Pipeline of the 3D left-atrium task (LA 2018 in the UA-MT / SSL4MIS layout, ``medssl prepare ssl4mis``): one
    MRI channel already normalised per volume (zero mean, unit variance), binary atrium labels.

    Training and unlabelled patches are cut from the volume zoomed by ``scale`` (MONAI's ``Zoom``, trilinear for
    the image, nearest for labels: 0.5 is half resolution); evaluation and inference keep each volume at its own
    resolution, and the bundle's :class:`~medssl.inference.scaled.ScaledSlidingWindowInferer` zooms the same way,
    so the test volumes are scored at full resolution. Training crops are half centred on the atrium, half anywhere
    (``RandCropByPosNegLabeld``, every voxel a candidate negative: the intensities are z-scores), then flipped.

    Args:
        stage: one of :data:`STAGES`.
        roi_size: training patch size (in voxels after the zoom).
        num_samples: patches per case per iteration (train and unlabelled stages).
        scale: zoom factor of the training and unlabelled volumes.
        pseudo_labels: the unlabelled cases carry an offline ``pseudo_label`` (teacher-student).
        strong: strongly augmented copies of each unlabelled patch (:func:`strong_views`, the linear contrast for
            z-scored images).
    """
    roi = _check(stage, roi_size, num_samples, 3)
    check_positive("scale", scale)
    keys, label_keys = _stage_keys(stage, pseudo_labels)
    xforms = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        ValidateCased("image", label_keys, spatial_dims=3, channels=1, label_values=(0, 1)),
        EnsureTyped(keys, track_meta=True),
    ]
    if stage in ("train", "unlabeled"):
        if scale != 1.0:
            modes = ["trilinear" if k == "image" else "nearest" for k in keys]
            xforms.append(Zoomd(keys, zoom=scale, mode=modes, keep_size=False))
        xforms += _crops_and_flips(stage, roi, num_samples, keys, image_threshold=float("-inf"), cache_indices=False)
    if stage == "unlabeled":
        xforms += strong_views(strong, 3)
    return Compose(xforms)


def brats_transforms(
    stage: str,
    spatial_dims: int = 3,
    roi_size: Sequence[int] = (128, 128, 128),
    num_samples: int = 1,
    label_convention: str = "2018",
    pseudo_labels: bool = False,
    strong: int = 0,
    scale: float = 1.0,
) -> Compose:
    """Pipeline of the BraTS tasks: four MRI channels (t1, t1ce, t2, flair), labels to contiguous 0..3.

    3D cases are lists of four modality files; 2D cases (``medssl prepare brats --slices2d``) are one (H, W, 4) file
    per slice with a (H, W) label. With ``scale`` (3D only), training and unlabelled patches are cut from the volume
    zoomed by that factor (as :func:`la_transforms`; the bundle's
    :class:`~medssl.inference.scaled.ScaledSlidingWindowInferer` zooms evaluation and inference volumes the same way).

    Args:
        stage: one of :data:`STAGES`.
        spatial_dims: 3 for volumes, 2 for axial slices.
        roi_size: training patch size.
        num_samples: patches per case per iteration.
        label_convention: convention of the label files (and of offline pseudo-labels).
        pseudo_labels: the unlabelled cases carry an offline ``pseudo_label``.
        strong: strongly augmented copies of each unlabelled patch (:func:`strong_views`).
        scale: zoom factor of the training and unlabelled volumes (3D).

    Raises:
        ValueError: ``scale`` is not positive, or not 1 for 2D slices.
    """
    check_choice("spatial_dims", spatial_dims, (2, 3))
    roi = _check(stage, roi_size, num_samples, spatial_dims)
    check_positive("scale", scale)
    if spatial_dims == 2 and scale != 1.0:
        raise ValueError(f"scale zooms 3D volumes; 2D slices take scale 1, got {scale}.")
    keys, label_keys = _stage_keys(stage, pseudo_labels)
    # a 2D model sees slices normalised one by one, in training and in the stacked scans it is scored on
    normalize = NormalizeIntensityd("image", nonzero=True, channel_wise=True)
    if spatial_dims == 2 and stage == "eval":  # whole scans: the stacked slices of each case
        load = [
            StackSlicesd(keys),
            EnsureChannelFirstd("image", channel_dim=-1),
            EnsureChannelFirstd(label_keys, channel_dim="no_channel"),
        ]
        normalize = SliceWiseNormalizeIntensityd("image", nonzero=True, channel_wise=True)
        spatial_dims = 3
    elif spatial_dims == 3:
        load = [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=None),
        ]
    else:
        load = [LoadImaged(keys, image_only=True), EnsureChannelFirstd("image", channel_dim=-1)]
        if label_keys:
            load.append(EnsureChannelFirstd(label_keys, channel_dim="no_channel"))
    xforms = load + [
        ValidateCased(
            "image",
            label_keys,
            spatial_dims=spatial_dims,
            channels=4,
            label_values=label_values(label_convention),
            # the volume zoomed by scale must hold a patch
            min_shape=[math.ceil(r / scale) for r in roi] if stage in ("train", "unlabeled") else None,
        ),
        normalize,
        EnsureTyped(keys, track_meta=True),
    ]
    if label_keys:
        xforms.append(BratsLabelConventiond(label_keys, src=label_convention, dst="contiguous"))
    if stage in ("train", "unlabeled"):
        if scale != 1.0:
            modes = ["trilinear" if k == "image" else "nearest" for k in keys]
            xforms.append(Zoomd(keys, zoom=scale, mode=modes, keep_size=False))
        xforms += _crops_and_flips(stage, roi, num_samples, keys, 0.0, cache_indices=spatial_dims == 2)
        xforms += [
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    if stage == "unlabeled":
        xforms += strong_views(strong, spatial_dims)
    return Compose(xforms)


#: ACDC's foreground classes, in label order (0 is background).
ACDC_CLASSES = ("RV", "Myo", "LV")


def acdc_transforms(
    stage: str,
    roi_size: Sequence[int] = (128, 128),
    pseudo_labels: bool = False,
    strong: int = 0,
    strong_contrast: str = "gamma",
) -> Compose:
    """Pipeline of the 2D cardiac MRI task (ACDC in the SSL4MIS layout): one channel in [0, 1], labels 0..3.

    Training slices are resized whole to ``roi_size`` (as SSL4MIS resizes them; no crop), then rotated by a
    multiple of 90 degrees and flipped, or rotated by up to 20 degrees, each with probability one half (SSL4MIS's
    ``RandomGenerator``). Evaluation and inference read whole slices or volumes (``H x W x slices``) at their own
    size: :class:`~medssl.inference.slices.ResizedSliceInferer` resizes each slice for the network and the
    logits back. Intensities are used as stored (the SSL4MIS files are scaled to [0, 1] per volume).

    Args:
        stage: one of :data:`STAGES`.
        roi_size: the network's in-plane size.
        pseudo_labels: the unlabelled slices carry an offline ``pseudo_label`` (teacher-student).
        strong: strongly augmented copies of each unlabelled slice (:func:`strong_views`).
        strong_contrast: their contrast change, "gamma" (the default here: slices in [0, 1] whose background is the
            minimum, where the gamma curve measured better on the ACDC track) or "linear".
    """
    check_choice("stage", stage, STAGES)
    roi = _check(stage, roi_size, 1, 2)
    keys, label_keys = _stage_keys(stage, pseudo_labels)
    if stage in ("train", "unlabeled"):
        xforms = [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            ValidateCased("image", label_keys, spatial_dims=2, channels=1, label_values=range(len(ACDC_CLASSES) + 1)),
            Resized("image", spatial_size=roi, mode="bilinear"),
        ]
        if label_keys:
            xforms.append(Resized(label_keys, spatial_size=roi, mode="nearest"))
        modes = ["bilinear"] + ["nearest"] * len(label_keys)
        return Compose(
            xforms
            + [
                EnsureTyped(keys, track_meta=False),
                RandRotate90d(keys, prob=0.5, max_k=3),
                RandFlipd(keys, prob=0.25, spatial_axis=0),
                RandFlipd(keys, prob=0.25, spatial_axis=1),
                RandRotated(keys, range_x=0.349, prob=0.25, mode=modes, padding_mode="zeros"),
            ]
            + (strong_views(strong, 2, strong_contrast) if stage == "unlabeled" else [])
        )
    if stage == "eval":
        load = [StackSlicesd(keys), EnsureChannelFirstd(keys, channel_dim="no_channel")]
        dims: int | tuple[int, ...] = (2, 3)
    else:
        load = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys, channel_dim="no_channel")]
        dims = (2, 3)
    return Compose(
        load
        + [
            ValidateCased("image", label_keys, spatial_dims=dims, channels=1, label_values=range(len(ACDC_CLASSES) + 1)),
            EnsureTyped(keys, track_meta=True),
        ]
    )
