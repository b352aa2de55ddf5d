"""Every bundle from the wheel, outside the repository, as a user who ran ``pip install medssl`` would take it:
``medssl bundle export``, then the bundle README's four commands in the exported folder (training, evaluation,
inference, and multi-process training with torchrun, 2 processes, gloo on the CPU), each on tiny data.

The per-bundle test modules run the same commands from the source tree with more checks; here the point is that an
exported bundle is complete: its configs, the common base copied in as files of its own, its metadata and logging
configuration, and nothing that points back into the repository.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from _wheel import installed_wheel, run_python

from medssl.checkpoints import load_state_dict_file
from medssl.workflows.bundle import bundles_dir

BUNDLES_DIR = bundles_dir()

UNET_2D = {"roi_size": "[32,32]", "network_channels": "[4,8,16,32,64]", "num_res_units": 0}
UNET_3D = {"roi_size": "[32,32,32]", "scale": 0.5, "network_channels": "[4,8,16,32,64]", "num_res_units": 0}
TRANSBTS = {"network_channels": "[4,8,16,32]", "embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}
FRACTIONS = {"labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25}
EPOCH = {"epochs": 1, "val_interval": 1, "cache_rate": 0.0}
STEPS = {"iterations": 2, "val_interval": 2}


def _acdc(data, infer):
    shutil.copy(data / "images" / "patient102_frame01.nii.gz", infer / "vol.nii.gz")
    net = UNET_2D
    train = {"dataset_dir": data, **net, **STEPS, "batch_size": 2, "unlabeled_batch_size": 2, "ssl_method": "fixmatch"}
    return train, net, ["vol"]


def _la(data, infer):
    case = json.loads((data / "datalist_1.json").read_text())["testing"][0]["case_id"]
    shutil.copy(data / "images" / f"{case}.nii.gz", infer / f"{case}.nii.gz")
    net = UNET_3D
    train = {"dataset_dir": data, "datalist": data / "datalist_ssl.json", **net, **STEPS, "batch_size": 1,
             "unlabeled_batch_size": 1, "num_samples": 1, "ssl_method": "fixmatch"}  # fmt: skip
    return train, net, [case]


def _lung(root, infer):
    image = sorted((root / "data" / "imagesTr").glob("*.nii.gz"))[0]
    shutil.copy(image, infer / image.name)
    net = {"roi_size": "[16,16,16]"}
    train = {"dataset_dir": root / "data", **net, **EPOCH, **FRACTIONS, "ssl_method": "segpl"}
    return train, net, [image.name.split(".")[0]]


def _brats(root, infer):
    data = root / "data"
    entries = json.loads((data / "dataset.json").read_text())["training"]
    test = [{**e, "image": [str(data / f) for f in e["image"]], "label": str(data / e["label"])} for e in entries[-1:]]
    (infer / "datalist.json").write_text(json.dumps({"testing": test}))
    net = {"roi_size": "[32,32,32]", **TRANSBTS}
    train = {"datalist": data / "dataset.json", **net, **EPOCH, **FRACTIONS, "ssl_method": "segpl"}
    return train, net, [e["case_id"] for e in test]


def _brats2d(root, infer):
    entries = json.loads((root / "slices" / "datalist.json").read_text())["training"]
    (infer / "datalist.json").write_text(json.dumps({"testing": entries[-1:]}))
    net = {"roi_size": "[32,32]", **TRANSBTS}
    train = {"dataset_dir": root / "slices", **net, **EPOCH, **FRACTIONS, "batch_size": 2, "unlabeled_batch_size": 2,
             "ssl_method": "segpl"}  # fmt: skip
    return train, net, [f"{e['case_id']}_z{e['slice']:03d}" for e in entries[-1:]]


BUNDLES = {
    "acdc_mri_ssl_segmentation": ("acdc_data", _acdc, 29541),
    "la_mri_ssl_segmentation": ("la_data", _la, 29542),
    "lung_vessel_ct_ssl_segmentation": ("lung_data", _lung, 29543),
    "brats_mri_transbts_ssl_segmentation": ("brats_data", _brats, 29544),
    "brats_mri_axial_slices_ssl_segmentation": ("brats2d_data", _brats2d, 29545),
}


#: The ``--config_file`` of each command in the bundle READMEs (as the shell passes it).
DOCUMENTED = {
    "train": "['configs/common.json','configs/train.json']",
    "evaluate": "['configs/common.json','configs/train.json','configs/evaluate.json']",
    "infer": "configs/inference.json",
    "multi_gpu": "['configs/common.json','configs/train.json','configs/multi_gpu_train.json']",
}
COMMAND = {
    "train": "python -m monai.bundle run --config_file \"{}\"",
    "evaluate": "python -m monai.bundle run --config_file \"{}\"",
    "infer": "python -m monai.bundle run --config_file {}",
    "multi_gpu": "torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"{}\"",
}


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_the_readme_documents_the_commands_run_here(bundle):
    readme = (BUNDLES_DIR / bundle / "docs" / "README.md").read_text()
    for name, config in DOCUMENTED.items():
        assert COMMAND[name].format(config) in readme, (bundle, name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return installed_wheel(tmp_path_factory)


def _args(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in (f"--{key}", str(value))]


@pytest.mark.dist
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_documented_commands_run_from_an_exported_bundle(request, installed, tmp_path, bundle):
    fixture, setup, port = BUNDLES[bundle]
    data = request.getfixturevalue(fixture)
    _, env = installed
    run_python(["-m", "medssl", "bundle", "export", bundle, "--out", str(tmp_path / "export")], env, tmp_path)
    folder = tmp_path / "export" / bundle
    assert not any(p.is_symlink() for p in folder.rglob("*")), "an exported bundle holds files, not links"
    infer = tmp_path / "infer"
    infer.mkdir()
    train, net, cases = setup(data, infer)
    train = {**train, "num_workers": 0, "method#warmup": 0, "method#ramp": 0}
    run = ["-m", "monai.bundle", "run"]

    # training, single process
    single = tmp_path / "single"
    run_python([*run, "--config_file", DOCUMENTED["train"], *_args({"bundle_root": single, **train})], env, folder)
    last = load_state_dict_file(single / "models" / "model_last.pt")
    assert last["trainer"]["iteration"] >= 1 and (single / "models" / "model.pt").is_file()

    # evaluation of the datalist's test cases: one row per case
    out = tmp_path / "test"
    evaluate = DOCUMENTED["evaluate"]
    run_python([*run, "--config_file", evaluate, *_args({"bundle_root": single, **train, "output_dir": out})], env, folder)
    assert (out / "per_case.csv").is_file() and len((out / "per_case.csv").read_text().splitlines()) >= 2

    # inference: models/model.pt of the run, a label map on each input's grid
    pred = tmp_path / "pred"
    infer_args = {"bundle_root": single, "dataset_dir": infer, "output_dir": pred, **net}
    run_python([*run, "--config_file", DOCUMENTED["infer"], *_args(infer_args)], env, folder)
    assert sorted(p.name for p in pred.iterdir()) == sorted(f"{c}_seg.nii.gz" for c in cases)
    single_inputs = sorted(p for p in infer.iterdir() if p.name.endswith(".nii.gz"))
    for image in single_inputs:
        seg = nib.load(pred / image.name.replace(".nii.gz", "_seg.nii.gz"))
        assert seg.shape == nib.load(image).shape and np.allclose(seg.affine, nib.load(image).affine)

    # multi-process training: torchrun, 2 processes; rank 0 writes plain (not DDP-wrapped) weights
    multi = tmp_path / "multi"
    log = run_python(["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *run,
                      "--config_file", DOCUMENTED["multi_gpu"], *_args({"bundle_root": multi, **train})], env, folder, stderr=True)  # fmt: skip
    assert log.count("SemiSupervisedTrainer - INFO - Engine run finished") == 2, log[-3000:]
    ckpt = load_state_dict_file(multi / "models" / "model_last.pt")
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]  # one pass of each rank's share
    assert not any(k.startswith("module.") for k in ckpt["model"])
