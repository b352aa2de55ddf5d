from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medssl.data.phantoms import BRATS_MODALITIES, brats_phantom, lung_vessel_phantom, smooth_noise
from medssl.data.synthetic import case_affine, case_rng, synthesize

SIZE = 32
PHANTOMS = [lung_vessel_phantom, brats_phantom]


def _arrays(result) -> list[np.ndarray]:
    """The image array(s) then the label of a phantom's ``(image(s), label)``."""
    images, label = result[:2]
    return (list(images.values()) if isinstance(images, dict) else [images]) + [label]


def _load(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


# --- determinism --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phantom", PHANTOMS)
def test_same_seed_gives_identical_arrays(phantom):
    first = _arrays(phantom(SIZE, np.random.default_rng([3, 1])))
    second = _arrays(phantom(SIZE, np.random.default_rng([3, 1])))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("phantom", PHANTOMS)
def test_different_seed_gives_different_arrays(phantom):
    first = _arrays(phantom(SIZE, np.random.default_rng([3, 1])))
    second = _arrays(phantom(SIZE, np.random.default_rng([4, 1])))
    for a, b in zip(first, second):
        assert not np.array_equal(a, b)


def test_smooth_noise_is_normalised_and_smooth():
    field = smooth_noise((40, 30, 20), 8.0, np.random.default_rng(0))
    assert field.shape == (40, 30, 20) and field.dtype == np.float32
    assert abs(float(field.mean())) < 1e-4 and abs(float(field.std()) - 1.0) < 1e-4
    # neighbours of a field correlated over ~8 voxels differ far less than independent unit-variance samples (~1.13)
    assert float(np.abs(np.diff(field, axis=0)).mean()) < 0.4
    with pytest.raises(ValueError, match="scale"):
        smooth_noise((8, 8, 8), 0.0, np.random.default_rng(0))


# --- lung vessel phantom ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lung_labels_and_intensities(seed):
    image, label, regions = lung_vessel_phantom(SIZE, np.random.default_rng([seed, 0]), return_regions=True)
    assert image.shape == label.shape == (SIZE,) * 3
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1}
    vessel = label.astype(bool)
    lung = regions["lung"]
    assert not (vessel & ~lung).any(), "vessel label outside the lungs"

    # Air outside the body (noise and blur around -1000).
    air = ~ndimage.binary_dilation(regions["body"], iterations=2)
    assert -1030.0 < float(image[air].mean()) < -970.0
    # Lung parenchyma: inside the lung, away from vessels, distractors and the pleura (partial volume).
    near = ndimage.binary_dilation(vessel | regions["nodule"] | regions["airway"], iterations=2)
    parenchyma = ndimage.binary_erosion(lung, iterations=2) & ~near
    assert parenchyma.sum() > 100
    parenchyma_hu = float(image[parenchyma].mean())
    assert -900.0 < parenchyma_hu < -750.0
    # Vessels are bright against lung, even counting their partial-volume edge voxels.
    assert float(image[vessel].mean()) > parenchyma_hu + 300.0
    # Soft tissue of the body wall and mediastinum.
    tissue = ndimage.binary_erosion(
        regions["body"] & ~lung & ~regions["spine"] & ~regions["airway"], iterations=2
    )
    assert 0.0 < float(image[tissue].mean()) < 100.0


@pytest.mark.parametrize("size", [32, 64])
def test_lung_vessel_fraction(size):
    _, label = lung_vessel_phantom(size, np.random.default_rng([0, size]))
    assert 0.004 < float(label.mean()) < 0.08


def test_lung_distractors_are_not_labelled():
    _, label, regions = lung_vessel_phantom(48, np.random.default_rng(5), return_regions=True)
    assert regions["nodule"].any() and (regions["airway"] & regions["lung"]).any() and regions["spine"].any()
    assert not (label.astype(bool) & regions["spine"]).any()
    assert not (regions["airway"] & ~regions["body"]).any(), "airways stay inside the body"


def _parenchyma_and_vessel_hu(seed: int, variation: str) -> tuple[float, float]:
    image, label, regions = lung_vessel_phantom(
        SIZE, np.random.default_rng([seed, 0]), return_regions=True, variation=variation
    )
    vessel = label.astype(bool)
    assert not (vessel & ~regions["lung"]).any()
    near = ndimage.binary_dilation(vessel | regions["nodule"] | regions["airway"], iterations=2)
    parenchyma = ndimage.binary_erosion(regions["lung"], iterations=2) & ~near
    return float(image[parenchyma].mean()), float(image[vessel].mean())


def test_scanner_variation_spreads_calibration_and_contrast_between_cases():
    case = np.array([_parenchyma_and_vessel_hu(seed, "case") for seed in range(8)])
    scanner = np.array([_parenchyma_and_vessel_hu(seed, "scanner") for seed in range(8)])
    # one scanner: lung parenchyma within ~50 HU of its nominal value; several: offsets of up to 300 HU and gains
    assert case[:, 0].std() < 30.0 and scanner[:, 0].std() > 3 * case[:, 0].std()
    assert scanner[:, 1].std() > case[:, 1].std()  # contrast phase: unenhanced to enhanced vessels
    assert (scanner[:, 1] > scanner[:, 0] + 150.0).all()  # vessels stay brighter than lung in every case


def test_case_is_the_default_variation_and_an_unknown_one_is_refused():
    rng = lambda: np.random.default_rng([2, 0])  # noqa: E731
    default = lung_vessel_phantom(SIZE, rng())
    np.testing.assert_array_equal(default[0], lung_vessel_phantom(SIZE, rng(), variation="case")[0])
    with pytest.raises(ValueError, match="variation"):
        lung_vessel_phantom(SIZE, rng(), variation="vendor")


# --- brats phantom ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_brats_labels_all_present(seed):
    images, label = brats_phantom(SIZE, np.random.default_rng([seed, 0]))
    assert list(images) == list(BRATS_MODALITIES)
    assert label.dtype == np.uint8 and label.shape == (SIZE,) * 3
    assert set(np.unique(label).tolist()) == {0, 1, 2, 4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brats_intensities(seed):
    images, label, regions = brats_phantom(SIZE, np.random.default_rng([seed, 0]), return_regions=True)
    brain = regions["brain"]
    assert not (label.astype(bool) & ~brain).any(), "tumour label outside the brain"
    normal = brain & (label == 0)
    for modality, img in images.items():
        assert img.dtype == np.float32 and img.shape == (SIZE,) * 3
        assert np.all(img[~brain] == 0.0), modality
        assert float(img.min()) >= 0.0, modality
        assert float(np.mean(img[brain] > 0)) > 0.99, modality

    def mean(modality, mask):
        return float(images[modality][mask].mean())

    t1ce_enh = mean("t1ce", label == 4)
    assert t1ce_enh > 1.3 * mean("t1ce", label == 1)
    assert t1ce_enh > 1.15 * mean("t1ce", brain)
    assert mean("flair", label == 2) > 1.3 * mean("flair", normal)
    assert mean("t2", label == 2) > 1.15 * mean("t2", normal)
    assert mean("t2", label == 1) > mean("t1ce", label == 1) * mean("t2", normal) / mean("t1ce", normal)
    # CSF is suppressed on flair but bright on t2.
    assert mean("flair", regions["csf"]) < mean("flair", regions["wm"])
    assert mean("t2", regions["csf"]) > mean("t2", regions["wm"])


# --- argument checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phantom", PHANTOMS)
@pytest.mark.parametrize("size", [16, 31, 257])
def test_phantom_size_out_of_range(phantom, size):
    with pytest.raises(ValueError, match="size"):
        phantom(size, np.random.default_rng(0))


@pytest.mark.parametrize("phantom", PHANTOMS)
def test_phantom_wrong_types(phantom):
    with pytest.raises(TypeError, match="size"):
        phantom(32.0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        phantom(32, 0)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"task": "liver"}, ValueError, "task"),
        ({"cases": 0}, ValueError, "cases"),
        ({"cases": -2}, ValueError, "cases"),
        ({"size": 16}, ValueError, "size"),
        ({"size": 512}, ValueError, "size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"cases": 2.0}, TypeError, "cases"),
        ({"size": "64"}, TypeError, "size"),
        ({"variation": "vendor"}, ValueError, "variation"),
        ({"task": "brats", "variation": "scanner"}, ValueError, "variation"),
    ],
)
def test_synthesize_bad_arguments(tmp_path, kwargs, error, name):
    args = {"task": "lung_vessel", "cases": 1, "size": 32, "seed": 0, "out": tmp_path / "ds"} | kwargs
    with pytest.raises(error, match=name):
        synthesize(**args)
    assert not (tmp_path / "ds").exists(), "nothing is written for bad arguments"


def test_synthesize_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="out"):
        synthesize("brats", 1, 32, 0, tmp_path / "f")


# --- data set on disk ---------------------------------------------------------------------------------------------


def test_synthesize_lung_vessel_dataset(tmp_path):
    path = synthesize("lung_vessel", 2, SIZE, 7, tmp_path / "lung")
    assert path == tmp_path / "lung" / "dataset.json"
    ds = json.loads(path.read_text())
    assert ds["name"] == "lung_vessel_synthetic" and ds["task"] == "lung_vessel"
    assert ds["seed"] == 7 and ds["size"] == SIZE and ds["numTraining"] == 2 and ds["variation"] == "case"
    assert ds["labels"] == {"0": "background", "1": "vessel"}
    assert [e["image"] for e in ds["training"]] == [f"imagesTr/lung_vessel_00{i}.nii.gz" for i in range(2)]
    assert [e["label"] for e in ds["training"]] == [f"labelsTr/lung_vessel_00{i}.nii.gz" for i in range(2)]
    assert [e["case_id"] for e in ds["training"]] == ["lung_vessel_000", "lung_vessel_001"]
    expected_affine = case_affine(SIZE, ds["spacing"][0])
    np.testing.assert_allclose(expected_affine[:3, 3], [-15.5, -15.5, -15.5])
    for entry in ds["training"]:
        image, affine = _load(path.parent / entry["image"])
        label, label_affine = _load(path.parent / entry["label"])
        assert image.shape == label.shape == (SIZE,) * 3
        assert image.dtype == np.float32 and label.dtype == np.uint8
        np.testing.assert_allclose(affine, expected_affine)
        np.testing.assert_allclose(label_affine, expected_affine)
        assert set(np.unique(label).tolist()) == {0, 1}
    # The file holds exactly what the in-memory generator gives for that case's generator.
    image, label = lung_vessel_phantom(SIZE, case_rng(7, 1))
    np.testing.assert_array_equal(_load(path.parent / ds["training"][1]["image"])[0], image)
    np.testing.assert_array_equal(_load(path.parent / ds["training"][1]["label"])[0], label)


def test_synthesize_brats_dataset(tmp_path):
    path = synthesize("brats", 2, SIZE, 0, tmp_path / "brats")
    ds = json.loads(path.read_text())
    assert sorted(ds["labels"]) == ["0", "1", "2", "4"] and ds["labels"]["4"] == "enhancing tumour"
    assert ds["modality"] == {"0": "t1", "1": "t1ce", "2": "t2", "3": "flair"}
    for i, entry in enumerate(ds["training"]):
        assert entry["case_id"] == f"brats_{i:03d}"
        assert entry["image"] == [f"imagesTr/brats_{i:03d}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
        label, affine = _load(path.parent / entry["label"])
        assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1, 2, 4}
        for rel in entry["image"]:
            image, image_affine = _load(path.parent / rel)
            assert image.shape == (SIZE,) * 3 and image.dtype == np.float32
            np.testing.assert_allclose(image_affine, affine)
            np.testing.assert_array_equal(image[label > 0] > 0, True)
    # Contrast order on disk: enhancing tumour is brightest on t1ce, the second file.
    label = _load(path.parent / ds["training"][0]["label"])[0]
    t1, t1ce = (_load(path.parent / rel)[0] for rel in ds["training"][0]["image"][:2])
    assert t1ce[label == 4].mean() / t1ce[label == 1].mean() > t1[label == 4].mean() / t1[label == 1].mean()


def test_synthesize_is_deterministic_and_case_independent_of_count(tmp_path):
    a = synthesize("lung_vessel", 1, SIZE, 11, tmp_path / "a")
    b = synthesize("lung_vessel", 3, SIZE, 11, tmp_path / "b")
    c = synthesize("lung_vessel", 1, SIZE, 12, tmp_path / "c")
    rel = "imagesTr/lung_vessel_000.nii.gz"
    first = _load(a.parent / rel)[0]
    np.testing.assert_array_equal(first, _load(b.parent / rel)[0])
    np.testing.assert_array_equal(
        _load(a.parent / "labelsTr/lung_vessel_000.nii.gz")[0], _load(b.parent / "labelsTr/lung_vessel_000.nii.gz")[0]
    )
    assert not np.array_equal(first, _load(c.parent / rel)[0])
    assert not np.array_equal(first, _load(b.parent / "imagesTr/lung_vessel_001.nii.gz")[0])
    # Rerunning into the same folder rewrites the same data set.
    again = synthesize("lung_vessel", 1, SIZE, 11, tmp_path / "a")
    assert json.loads(again.read_text()) == json.loads(a.read_text())
    np.testing.assert_array_equal(_load(a.parent / rel)[0], first)


def test_dataset_loads_with_monai(tmp_path):
    from monai.data import load_decathlon_datalist

    path = synthesize("brats", 1, SIZE, 0, tmp_path / "brats")
    entries = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="training")
    assert len(entries) == 1 and len(entries[0]["image"]) == 4
    assert all(str(tmp_path) in p for p in entries[0]["image"] + [entries[0]["label"]])
