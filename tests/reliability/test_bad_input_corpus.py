"""The bad-input corpus: malformed inputs built on the fly, each run through the command a user runs.

Every case must end with a non-zero exit status and a message naming the file (or argument) and the problem, with no
traceback (for ``python -m monai.bundle run``, the bundles' exception hook prints two lines in place of the traceback:
that the run stopped on bad input, and medssl's clear message), must leave its inputs untouched, and must leave no
file a later stage would read.
docs/reliability.md lists every case with the message the user sees.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.cli import main

from _reliability import (
    BRATS2D,
    BRATS2D_TINY,
    BUNDLES,
    LUNG,
    LUNG_TINY,
    files_under,
    lung_phantom,
    run_bundle,
    snapshot,
    write_nifti,
)
from _dicom import write_dicom_series


@dataclass
class Case:
    """What a bad-input case runs and what the user must see."""

    argv: list[str]  # `medssl` arguments, or monai.bundle overrides when ``bundle`` is set
    words: list[str]  # must all appear in the error message
    inputs: list[Path]  # must not change
    out: Path  # must hold no new file (bundle runs: no checkpoint, prediction or temporary file)
    bundle: str | None = None
    configs: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ medssl prepare lung-vessel-ct
def _lung_root(tmp: Path) -> Path:
    """Two good cases, a and b (NIfTI image + label); each lung case below then breaks case b."""
    root = tmp / "raw"
    for cid, seed in (("a", 0), ("b", 1)):
        image, label = lung_phantom(seed=seed)
        write_nifti(image, root / "images" / f"{cid}.nii.gz")
        write_nifti(label, root / "labels" / f"{cid}.nii.gz")
    return root


def _prepare_lung(tmp: Path, bad: Path, *words: str) -> Case:
    root = tmp / "raw"
    argv = ["prepare", "lung-vessel-ct", "--root", str(root), "--out", str(tmp / "out"), "--spacing", "keep"]
    return Case(argv, [str(bad), *words], [root], tmp / "out")


def truncated_nifti(tmp, ctx):
    path = _lung_root(tmp) / "images" / "b.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    return _prepare_lung(tmp, path, "cannot be read as an image")


def zero_byte_nifti(tmp, ctx):
    path = _lung_root(tmp) / "labels" / "b.nii.gz"
    path.write_bytes(b"")
    return _prepare_lung(tmp, path, "file is empty (0 bytes)")


def broken_nifti_header(tmp, ctx):
    path = _lung_root(tmp) / "images" / "b.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[344:348] = b"xyz\0"  # the magic string must be "n+1" (nibabel repairs a wrong sizeof_hdr itself)
    path.write_bytes(gzip.compress(bytes(raw)))
    return _prepare_lung(tmp, path, "cannot be read as an image")


def negative_dim_header(tmp, ctx):
    path = _lung_root(tmp) / "images" / "b.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[42:44] = struct.pack("<h", -5)  # dim[1], the first axis length
    path.write_bytes(gzip.compress(bytes(raw)))
    return _prepare_lung(tmp, path, "cannot be read as an image")


def dicom_missing_slice(tmp, ctx):
    root = _lung_root(tmp)
    (root / "images" / "b.nii.gz").unlink()
    folder = write_dicom_series(lung_phantom(seed=1)[0], root / "images" / "b")
    sorted(folder.iterdir())[5].unlink()
    (root / "labels" / "b.nii.gz").unlink()
    return _prepare_lung(tmp, folder, "unevenly spaced", "missing or duplicate slices")


def dicom_mixed_series(tmp, ctx):
    root = _lung_root(tmp)
    (root / "images" / "b.nii.gz").unlink()
    (root / "labels" / "b.nii.gz").unlink()
    folder = write_dicom_series(lung_phantom(seed=1)[0], root / "images" / "b")
    write_dicom_series(lung_phantom(seed=2)[0], folder, series_uid="1.2.826.0.1.3680043.2.1125.9.1.2", prefix="b")
    return _prepare_lung(tmp, folder, "holds 2 DICOM series")


def dicom_truncated_slice(tmp, ctx):
    root = _lung_root(tmp)
    (root / "images" / "b.nii.gz").unlink()
    (root / "labels" / "b.nii.gz").unlink()
    folder = write_dicom_series(lung_phantom(seed=1)[0], root / "images" / "b")
    bad = sorted(folder.iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:300])
    return _prepare_lung(tmp, bad, "DICOM file cannot be read")


def nan_voxels(tmp, ctx):
    root = _lung_root(tmp)
    image = lung_phantom(seed=1)[0].astype(np.float32)
    image[3, 4, 5] = np.nan
    path = write_nifti(image, root / "images" / "b.nii.gz")
    return _prepare_lung(tmp, path, "1 NaN and 0 Inf voxels")


def inf_voxels(tmp, ctx):
    root = _lung_root(tmp)
    image = lung_phantom(seed=1)[0].astype(np.float32)
    image[1:3, 4, 5] = np.inf
    path = write_nifti(image, root / "images" / "b.nii.gz")
    return _prepare_lung(tmp, path, "0 NaN and 2 Inf voxels")


def constant_image(tmp, ctx):
    path = write_nifti(np.full((20, 18, 16), -1024, np.int16), _lung_root(tmp) / "images" / "b.nii.gz")
    return _prepare_lung(tmp, path, "image is constant")


def image_2d_for_3d(tmp, ctx):
    root = _lung_root(tmp)
    path = write_nifti(lung_phantom(seed=1)[0][:, :, 0], root / "images" / "b.nii.gz")
    (root / "labels" / "b.nii.gz").unlink()
    return _prepare_lung(tmp, path, "expected a 3D image")


def shape_mismatch(tmp, ctx):
    path = write_nifti(lung_phantom(shape=(20, 18, 12))[1], _lung_root(tmp) / "labels" / "b.nii.gz")
    return _prepare_lung(tmp, path, "image shape (20, 18, 16) and label shape (20, 18, 12) differ")


def affine_mismatch(tmp, ctx):
    path = write_nifti(lung_phantom(seed=1)[1], _lung_root(tmp) / "labels" / "b.nii.gz", affine=np.diag([1, 1, 2.5, 1]))
    return _prepare_lung(tmp, path, "affines differ")


def label_values_outside_set(tmp, ctx):
    path = write_nifti(lung_phantom(seed=1)[1] * 3, _lung_root(tmp) / "labels" / "b.nii.gz")
    return _prepare_lung(tmp, path, "vessel label must be binary 0/1", "[3]")


# ------------------------------------------------------------------------------------------- medssl prepare brats
def _brats_root(tmp: Path, modalities=("t1", "t1ce", "t2", "flair"), label=None, shape=(16, 16, 12)) -> Path:
    root = tmp / "brats"
    rng = np.random.default_rng(0)
    case = root / "Case_001"
    for m in modalities:
        write_nifti(rng.normal(100, 20, shape).astype(np.float32), case / f"Case_001_{m}.nii.gz")
    seg = np.zeros(shape, np.uint8)
    seg[5:9, 5:9, 4:8] = 1
    seg[6:8, 6:8, 5:7] = 4
    write_nifti(seg if label is None else label, case / "Case_001_seg.nii.gz")
    return root


def _prepare_brats(tmp: Path, bad: Path, *words: str) -> Case:
    argv = ["prepare", "brats", "--root", str(tmp / "brats"), "--out", str(tmp / "out")]
    return Case(argv, [str(bad), *words], [tmp / "brats"], tmp / "out")


def brats_three_modalities(tmp, ctx):
    root = _brats_root(tmp, modalities=("t1", "t1ce", "t2"))
    return _prepare_brats(tmp, root / "Case_001", "missing modality", "flair")


def brats_label_outside_convention(tmp, ctx):
    seg = np.zeros((16, 16, 12), np.uint8)
    seg[4:8, 4:8, 4:8] = 3  # 3 is not a BraTS 2018 label (0, 1, 2, 4)
    root = _brats_root(tmp, label=seg)
    return _prepare_brats(tmp, root / "Case_001" / "Case_001_seg.nii.gz", "label values [3] are not in the allowed set")


def brats_modality_shape_mismatch(tmp, ctx):
    root = _brats_root(tmp)
    image = np.random.default_rng(1).normal(100, 20, (16, 16, 10)).astype(np.float32)
    bad = write_nifti(image, root / "Case_001" / "Case_001_t2.nii.gz")
    return _prepare_brats(tmp, bad, "(16, 16, 12)", "(16, 16, 10) differ")


# ---------------------------------------------------------------------------------------------------- medssl split
def _datalist(tmp: Path, n: int = 4, **extra) -> Path:
    """A datalist of ``n`` tiny labelled cases (files exist) plus ``extra`` top-level keys."""
    folder = tmp / "dl"
    image, label = lung_phantom()
    training = []
    for i in range(n):
        write_nifti(image, folder / f"img{i}.nii.gz")
        write_nifti(label, folder / f"lab{i}.nii.gz")
        training.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": training, **extra}))
    return path


def _split(tmp: Path, datalist: Path, fraction: str, *words: str) -> Case:
    argv = ["split", "--datalist", str(datalist), "--labeled-fraction", fraction, "--out", str(tmp / "out" / "s.json")]
    return Case(argv, list(words), [datalist.parent], tmp / "out")


def labeled_fraction_zero(tmp, ctx):
    return _split(tmp, _datalist(tmp), "0", "labeled_fraction must be in (0.0, 1.0], got 0.0")


def labeled_fraction_above_one(tmp, ctx):
    return _split(tmp, _datalist(tmp), "1.5", "labeled_fraction must be in (0.0, 1.0], got 1.5")


def datalist_missing_file(tmp, ctx):
    path = _datalist(tmp)
    (path.parent / "lab2.nii.gz").unlink()
    return _split(tmp, path, "0.5", str(path), "names a missing file", "lab2.nii.gz")


def datalist_duplicate_case(tmp, ctx):
    path = _datalist(tmp)
    data = json.loads(path.read_text())
    data["training"].append(dict(data["training"][1]))
    path.write_text(json.dumps(data))
    return _split(tmp, path, "0.5", str(path), "case 'img1' appears twice")


def datalist_not_json(tmp, ctx):
    path = _datalist(tmp)
    path.write_text(path.read_text()[:-5])
    return _split(tmp, path, "0.5", str(path), "not valid JSON")


def datalist_absent(tmp, ctx):
    (tmp / "dl").mkdir()
    return _split(tmp, tmp / "dl" / "absent.json", "0.5", "absent.json", "file not found")


def datalist_no_label(tmp, ctx):
    path = _datalist(tmp)
    data = json.loads(path.read_text())
    del data["training"][0]["label"]
    path.write_text(json.dumps(data))
    return _split(tmp, path, "0.5", str(path), "has no 'label'")


# ---------------------------------------------------------------------------------------------- medssl pseudolabel
def _pseudolabel(tmp: Path, ctx, unlabeled, *words: str, teacher: str = "lung", extra: list[str] = (), **kw) -> Case:
    """``medssl pseudolabel`` on a datalist of one good labelled case and ``unlabeled`` entries."""
    folder = tmp / "pl_in"
    folder.mkdir(parents=True, exist_ok=True)
    image, label = lung_phantom()
    data = {"training": [{"image": str(write_nifti(image, folder / "l.nii.gz")),
                          "label": str(write_nifti(label, folder / "l_seg.nii.gz"))}]}  # fmt: skip
    if unlabeled is not None:
        data["unlabeled"] = unlabeled
    path = folder / "split.json"
    path.write_text(json.dumps(data))
    if teacher == "lung":
        bundle, ckpt, overrides = BUNDLES / LUNG, ctx["lung_teacher"], {"roi_size": [16, 16, 16]}
    else:
        bundle, ckpt, overrides = BUNDLES / BRATS2D, ctx["brats2d_teacher"], BRATS2D_TINY
    ckpt = kw.get("checkpoint", ckpt)
    argv = ["pseudolabel", "--bundle", str(bundle), "--checkpoint", str(ckpt), "--datalist", str(path),
            "--out", str(tmp / "out"), "--device", "cpu"]  # fmt: skip
    for key, value in overrides.items():
        argv += ["--override", f"{key}={value}"]
    argv += list(extra)
    return Case(argv, list(words), [folder, Path(ckpt)], tmp / "out")


def _unlabeled_image(tmp: Path, array) -> list[dict]:
    return [{"image": str(write_nifti(array, tmp / "pl_in" / "u0.nii.gz"))}]


def unlabeled_list_empty(tmp, ctx):
    return _pseudolabel(tmp, ctx, [], "split.json", "the unlabelled set is empty or absent")


def unlabeled_list_absent(tmp, ctx):
    return _pseudolabel(tmp, ctx, None, "split.json", "the unlabelled set is empty or absent")


def pseudolabel_nan_image(tmp, ctx):
    image = lung_phantom(shape=(24, 24, 24))[0].astype(np.float32)
    image[1, 2, 3] = np.nan
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "u0.nii.gz", "1 NaN and 0 Inf voxels")


def pseudolabel_constant_image(tmp, ctx):
    image = np.zeros((24, 24, 24), np.float32)
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "u0.nii.gz", "image is constant")


def pseudolabel_2d_for_3d(tmp, ctx):
    image = lung_phantom(shape=(24, 24, 24))[0][:, :, 0]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "u0.nii.gz", "expected a 3D image")


def pseudolabel_3d_for_2d(tmp, ctx):
    image = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)  # a volume, not an (H, W, 4) slice
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "u0.nii.gz", "expected 4 image channels, got 24",
                        teacher="brats2d")  # fmt: skip


def brats_three_channels(tmp, ctx):
    image = np.random.default_rng(0).normal(size=(24, 24, 3)).astype(np.float32)  # t1, t1ce, t2: no flair
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "u0.nii.gz", "expected 4 image channels, got 3",
                        teacher="brats2d")  # fmt: skip


def checkpoint_other_network(tmp, ctx):
    from monai.networks.nets import UNet

    other = UNet(3, 1, 1, channels=(8, 16, 32), strides=(2, 2))
    ckpt = tmp / "ckpt" / "other.pt"
    ckpt.parent.mkdir()
    torch.save({"model": other.state_dict()}, ckpt)
    image = lung_phantom(shape=(24, 24, 24))[0]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), str(ckpt), "weights do not fit UNet",
                        "a checkpoint of another network", checkpoint=ckpt)  # fmt: skip


def checkpoint_unsafe_pickle(tmp, ctx):
    ckpt = tmp / "ckpt" / "pickled.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {}, "extra": Path("/etc")}, ckpt)  # any non-tensor object needs full unpickling
    image = lung_phantom(shape=(24, 24, 24))[0]
    words = [str(ckpt), "checkpoint refused: it holds a pathlib.PosixPath object", "could run code"]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), *words, checkpoint=ckpt)


def checkpoint_truncated(tmp, ctx):
    ckpt = tmp / "ckpt" / "cut.pt"
    ckpt.parent.mkdir()
    data = ctx["lung_teacher"].read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    image = lung_phantom(shape=(24, 24, 24))[0]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), str(ckpt), "checkpoint cannot be read",
                        checkpoint=ckpt)  # fmt: skip


def checkpoint_absent(tmp, ctx):
    ckpt = tmp / "ckpt" / "none.pt"
    image = lung_phantom(shape=(24, 24, 24))[0]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), str(ckpt), "checkpoint not found", checkpoint=ckpt)


def override_wrong_type(tmp, ctx):
    image = lung_phantom(shape=(24, 24, 24))[0]
    return _pseudolabel(tmp, ctx, _unlabeled_image(tmp, image), "override roi_size='sixteen'", "sets roi_size to a list",
                        extra=["--override", "roi_size=sixteen"])  # fmt: skip


def bundle_not_a_bundle(tmp, ctx):
    case = _pseudolabel(tmp, ctx, _unlabeled_image(tmp, lung_phantom()[0]), str(tmp), "not a medssl bundle")
    case.argv[case.argv.index("--bundle") + 1] = str(tmp)
    return case


# ------------------------------------------------------------------------------ bundles via python -m monai.bundle
def _lung_train(tmp: Path, ctx, words: list[str], configs=("train.json",), **overrides) -> Case:
    data = ctx["lung_data"] / "data"
    args = {"bundle_root": str(tmp / "run"), "dataset_dir": str(data), "epochs": 1, "labeled_fraction": 0.5,
            "val_fraction": 0.25, "test_fraction": 0.25, **LUNG_TINY, **overrides}  # fmt: skip
    return Case(args, words, [data], tmp / "run", bundle=LUNG, configs=list(configs))


def bundle_train_datalist_missing_file(tmp, ctx):
    data = json.loads((ctx["lung_data"] / "data" / "dataset.json").read_text())
    base = ctx["lung_data"] / "data"
    for e in data["training"]:
        e["image"], e["label"] = str(base / e["image"]), str(base / e["label"])
    data["training"][2]["label"] = str(tmp / "gone_seg.nii.gz")
    path = tmp / "dl" / "dataset.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    case = _lung_train(tmp, ctx, [str(path), "names a missing file", "gone_seg.nii.gz"], datalist=str(path))
    case.inputs.append(path.parent)
    return case


def bundle_train_volume_smaller_than_roi(tmp, ctx):
    return _lung_train(tmp, ctx, ["spatial shape (32, 32, 32) is smaller than the region of interest (48, 48, 48)"],
                       roi_size="[48,48,48]")  # fmt: skip


def bundle_train_override_wrong_type(tmp, ctx):
    return _lung_train(tmp, ctx, ["roi_size must be a list of 3 sizes, got int (16)"], roi_size=16)


def bundle_train_labeled_fraction_above_one(tmp, ctx):
    return _lung_train(tmp, ctx, ["labeled_fraction must be in (0.0, 1.0], got 1.5"], labeled_fraction=1.5)


def bundle_evaluate_checkpoint_other_network(tmp, ctx):
    from monai.networks.nets import UNet

    ckpt = tmp / "ckpt" / "other.pt"
    ckpt.parent.mkdir()
    torch.save({"model": UNet(3, 1, 1, channels=(8, 16, 32), strides=(2, 2)).state_dict()}, ckpt)
    case = _lung_train(tmp, ctx, [str(ckpt), "weights do not fit UNet"], configs=("train.json", "evaluate.json"),
                       checkpoint=str(ckpt))  # fmt: skip
    case.inputs.append(ckpt)
    return case


def bundle_inference_nan_image(tmp, ctx):
    folder = tmp / "inputs"
    image = lung_phantom(shape=(24, 24, 24))[0].astype(np.float32)
    image[0, 0, 0] = np.nan
    bad = write_nifti(image, folder / "scan.nii.gz")
    args = {"bundle_root": str(tmp / "run"), "dataset_dir": str(folder), "output_dir": str(tmp / "run" / "pred"),
            "checkpoint": str(ctx["lung_teacher"]), "roi_size": "[16,16,16]"}  # fmt: skip
    return Case(args, [str(bad), "image holds 1 NaN and 0 Inf voxels"], [folder, ctx["lung_teacher"]], tmp / "run",
                bundle=LUNG, configs=["inference.json"])  # fmt: skip


MEDSSL_CASES = [
    truncated_nifti, zero_byte_nifti, broken_nifti_header, negative_dim_header, dicom_missing_slice,
    dicom_mixed_series, dicom_truncated_slice, nan_voxels, inf_voxels, constant_image, image_2d_for_3d,
    shape_mismatch, affine_mismatch, label_values_outside_set, brats_three_modalities, brats_label_outside_convention,
    brats_modality_shape_mismatch, labeled_fraction_zero, labeled_fraction_above_one, datalist_missing_file,
    datalist_duplicate_case, datalist_not_json, datalist_absent, datalist_no_label, unlabeled_list_empty,
    unlabeled_list_absent, pseudolabel_nan_image, pseudolabel_constant_image, pseudolabel_2d_for_3d,
    pseudolabel_3d_for_2d, brats_three_channels, checkpoint_other_network, checkpoint_unsafe_pickle,
    checkpoint_truncated, checkpoint_absent, override_wrong_type, bundle_not_a_bundle,
]  # fmt: skip
BUNDLE_CASES = [
    bundle_train_datalist_missing_file, bundle_train_volume_smaller_than_roi, bundle_train_override_wrong_type,
    bundle_train_labeled_fraction_above_one, bundle_evaluate_checkpoint_other_network, bundle_inference_nan_image,
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(lung_data, lung_teacher, brats2d_teacher):
    return {"lung_data": lung_data, "lung_teacher": lung_teacher, "brats2d_teacher": brats2d_teacher}


def _no_partial_outputs(out: Path, before: set[str]) -> None:
    new = [p for p in files_under(out) if str(p) not in before]
    assert not [p for p in new if p.name.startswith(".") or ".tmp" in p.name], new  # no temporary file left
    assert not [p for p in new if p.suffix in (".pt", ".json") or p.name.endswith(".nii.gz")], new


@pytest.mark.parametrize("make", MEDSSL_CASES, ids=[f.__name__ for f in MEDSSL_CASES])
def test_medssl_command(make, tmp_path, ctx, capsys):
    case = make(tmp_path, ctx)
    before = snapshot(*case.inputs)
    out_before = {str(p) for p in files_under(case.out)}
    status = main(case.argv)
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert status == 2, (captured.out, message)
    assert "Traceback" not in captured.out + captured.err
    assert message.startswith(f"medssl {case.argv[0]}: error: "), message
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(*case.inputs) == before, "an input was modified"
    assert files_under(case.out) == sorted(Path(p) for p in out_before), "output written despite the error"


@pytest.mark.parametrize("make", BUNDLE_CASES, ids=[f.__name__ for f in BUNDLE_CASES])
def test_bundle_run(make, tmp_path, ctx):
    case = make(tmp_path, ctx)
    before = snapshot(*case.inputs)
    out_before = {str(p) for p in files_under(case.out)}
    result = run_bundle(case.bundle, case.configs, case.argv)
    assert result.returncode != 0
    *_, stopped, last = result.stderr.strip().splitlines()
    assert last.startswith(("DataError: ", "DatalistError: ", "ValueError: ", "TypeError: ")), result.stderr[-3000:]
    for word in case.words:
        assert word in last, f"{word!r} not in {last!r}"
    # no traceback above it (there were 40-60 lines of MONAI's config resolver), and where to find one
    assert "Traceback" not in result.stderr and stopped.startswith("medssl: the run stopped on bad input"), result.stderr
    assert snapshot(*case.inputs) == before, "an input was modified"
    _no_partial_outputs(case.out, out_before)


def test_bundle_run_prints_the_traceback_on_request(tmp_path, ctx):
    case = BUNDLE_CASES[0](tmp_path, ctx)
    result = run_bundle(case.bundle, case.configs, case.argv, env={"MEDSSL_TRACEBACK": "1"})
    assert result.returncode != 0 and "Traceback (most recent call last)" in result.stderr
    assert all(word in result.stderr.strip().splitlines()[-1] for word in case.words)


def test_corpus_size():
    assert len(MEDSSL_CASES) + len(BUNDLE_CASES) >= 30
