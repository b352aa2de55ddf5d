"""The MONAI Deploy application end to end: a trained lung-vessel bundle on real CT series, DICOM SEG out."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monai.deploy.core", reason="the MONAI Deploy App SDK is not installed (make deploy-env)")
hd = pytest.importorskip("highdicom", reason="the deploy extra is not installed (make deploy-env)")

import pydicom  # noqa: E402

from medssl.data.io import read_volume, write_nifti  # noqa: E402
from medssl.deploy.run import run_deploy  # noqa: E402
from medssl.deploy.series import scan_dicom_folder, sort_slices  # noqa: E402
from medssl.errors import DataError  # noqa: E402
from medssl.workflows.bundle import load_bundle_inference  # noqa: E402
from medssl.inference.predict import predict_to_files  # noqa: E402

from .conftest import LUNG_BUNDLE, REPO, TEST_ROI, shared_series  # noqa: E402

OVERRIDES = {"roi_size": TEST_ROI}


def _bundle_nifti_prediction(folder, checkpoint, tmp_path):
    """The bundle's own NIfTI pipeline on the series as SimpleITK reads it (independent of the SDK's reader)."""
    volume = read_volume(folder)
    image = write_nifti(volume.array, volume.affine, tmp_path / "reference" / "image.nii.gz")
    inference = load_bundle_inference(LUNG_BUNDLE, checkpoint=checkpoint, overrides=OVERRIDES)
    [pred] = predict_to_files(
        inference.network, [{"image": str(image)}], inference.preprocessing, inference.inferer,
        inference.postprocessing, tmp_path / "reference", inference.device,
    )  # fmt: skip
    return read_volume(pred).array


@pytest.mark.parametrize("name", ["dcmqi_ct_3slice", "totalseg_ct_dicom_series"])
def test_dicom_in_dicom_seg_out(name, trained_lung_bundle, tmp_path):
    folder = shared_series(name)
    out = tmp_path / "out"
    written = run_deploy(LUNG_BUNDLE, folder, out, checkpoint=trained_lung_bundle, overrides=OVERRIDES)
    [series] = scan_dicom_folder(folder)
    sources = sort_slices(series.datasets)
    assert sorted(p.name for p in out.iterdir()) == [f"{series.uid}_seg.dcm", f"{series.uid}_seg.nii.gz"]
    assert sorted(written) == sorted(out.iterdir())

    ds = pydicom.dcmread(out / f"{series.uid}_seg.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    assert {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        str(s.SOPInstanceUID) for s in sources
    }
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert int(ds.NumberOfFrames) == len(sources)
    assert (ds.Rows, ds.Columns) == (sources[0].Rows, sources[0].Columns)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose([float(v) for v in measures.PixelSpacing], [float(v) for v in sources[0].PixelSpacing])
    source_positions = {str(s.SOPInstanceUID): [float(v) for v in s.ImagePositionPatient] for s in sources}
    for frame in ds.PerFrameFunctionalGroupsSequence:  # each frame lies where the slice it was derived from lies
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, source_positions[str(source)], atol=1e-3)
    assert ds.SegmentSequence[0].SegmentLabel == "vessel"
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "59820001"  # SNOMED blood vessel

    seg = hd.seg.segread(out / f"{series.uid}_seg.dcm")
    frames = seg.get_pixels_by_source_instance([str(s.SOPInstanceUID) for s in sources], combine_segments=True)
    mask = np.transpose(frames, (2, 1, 0))  # slice, row, column -> the NIfTI's column, row, slice
    reference = _bundle_nifti_prediction(folder, trained_lung_bundle, tmp_path)
    assert 0.001 < reference.mean() < 0.999, "a constant prediction would not test the geometry"
    np.testing.assert_array_equal(mask, reference)
    nifti = nib.load(out / f"{series.uid}_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(nifti.dataobj), reference)
    np.testing.assert_allclose(nifti.affine, read_volume(folder).affine, atol=1e-4)


def test_missing_weights_leave_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="checkpoint not found") as e:
        run_deploy(LUNG_BUNDLE, shared_series("dcmqi_ct_3slice"), out, checkpoint=tmp_path / "absent.pt")
    assert "absent.pt" in str(e.value)
    assert not out.exists() or not any(out.iterdir())


def test_several_series_leave_nothing(tmp_path, trained_lung_bundle):
    folder = tmp_path / "dicom"
    shutil.copytree(shared_series("dcmqi_ct_3slice"), folder)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"copy_{f.name}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    with pytest.raises(DataError, match="2 CT series match and no rule chooses"):
        run_deploy(LUNG_BUNDLE, folder, out, checkpoint=trained_lung_bundle, overrides=OVERRIDES)
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]


def test_failure_inside_the_application_leaves_nothing(tmp_path, trained_lung_bundle, monkeypatch):
    import medssl.deploy.app as app

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(app, "write_nifti", broken)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="the application failed on this series.*disk full"):
        run_deploy(
            LUNG_BUNDLE, shared_series("dcmqi_ct_3slice"), out, checkpoint=trained_lung_bundle, overrides=OVERRIDES
        )
    assert not any(out.iterdir())  # the SEG written before the failure was not moved into place


def test_command_line(tmp_path, trained_lung_bundle):
    """``python -m medssl.deploy`` on NIfTI input (NIfTI out), and a one-line error for a folder without DICOM."""
    volume = read_volume(shared_series("dcmqi_ct_3slice"))
    write_nifti(volume.array, volume.affine, tmp_path / "in" / "case1.nii.gz")
    base = [sys.executable, "-m", "medssl.deploy", "run", "--bundle", str(LUNG_BUNDLE),
            "--checkpoint", str(trained_lung_bundle), "--override", f"roi_size={TEST_ROI}"]  # fmt: skip
    ok = subprocess.run(base + ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")],
                        capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    pred = nib.load(tmp_path / "out" / "case1_seg.nii.gz")
    assert pred.shape == volume.array.shape
    (tmp_path / "empty").mkdir()
    bad = subprocess.run(base + ["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out2")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1]
        == f"medssl deploy: error: {tmp_path / 'empty'}: folder holds no DICOM image"
    )
    assert not (tmp_path / "out2").exists()


def test_torchscript_model_gives_the_checkpoints_segmentation(tmp_path, trained_lung_bundle):
    """The TorchScript model ``monai.bundle ckpt_export`` writes deploys like the checkpoint it came from."""
    script = tmp_path / "model.ts"
    export = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(script),
         "--ckpt_file", str(trained_lung_bundle), "--key_in_ckpt", "model", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.json"],
        cwd=LUNG_BUNDLE, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    volume = read_volume(shared_series("dcmqi_ct_3slice"))
    image = write_nifti(volume.array, volume.affine, tmp_path / "in" / "case1.nii.gz")
    [from_checkpoint] = run_deploy(
        LUNG_BUNDLE, image, tmp_path / "pt", checkpoint=trained_lung_bundle, overrides=OVERRIDES
    )
    [from_script] = run_deploy(LUNG_BUNDLE, image, tmp_path / "ts", checkpoint=script, overrides=OVERRIDES)
    a, b = nib.load(from_script).get_fdata(), nib.load(from_checkpoint).get_fdata()
    assert a.shape == b.shape and 0 < b.mean() < 1
    # the checkpoint runs with batch norm folded (optimize_for_inference), the script as exported: float rounding
    # may flip a voxel whose probability is within ~1e-6 of the cut, nothing more
    assert (a != b).mean() < 1e-4
