"""The bundles are built from one base: what they share lives once (``bundles/_common/configs``), each bundle's own
files say only what is its own, and no config carries logic in an inline ``if ... else``."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from medssl.workflows.bundle import COMMON, list_bundles

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SHARED = BUNDLES / "_common" / "configs"
#: what a bundle's configs folder takes from the base, linked in the source tree
LINKED = (COMMON, "evaluate.json", "multi_gpu_train.json", "logging.conf")
#: the metadata schema, linked to bundles/meta_schema.json so that verify_metadata runs offline from the bundle


def _counted_lines(path: Path) -> list[str]:
    """A config's lines as the duplication rule counts them: stripped, without lines of brackets alone or imports."""
    kept = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or re.fullmatch(r"[\[\]{}(),]+", text) or text.startswith('"$import'):
            continue
        kept.append(text)
    return kept


def _configs() -> list[Path]:
    """Every distinct config file of the bundles and the base (a link counts once, as the file it names)."""
    skip = ("metadata.json", "meta_schema.json")
    return sorted({p.resolve() for p in BUNDLES.glob("*/configs/*.json") if p.name not in skip})


def test_the_base_is_not_a_bundle_and_every_bundle_links_it():
    assert "_common" not in list_bundles() and len(list_bundles()) == 5
    for bundle in list_bundles():
        for name in LINKED:
            link = BUNDLES / bundle / "configs" / name
            assert link.is_symlink() and link.resolve() == (SHARED / name).resolve(), link
        schema = BUNDLES / bundle / "configs" / "meta_schema.json"
        assert schema.is_symlink() and schema.resolve() == (BUNDLES / "meta_schema.json").resolve()


def test_no_two_configs_share_more_than_30_lines():
    counted = {p: _counted_lines(p) for p in _configs()}
    assert len(counted) >= 11  # 4 train.json, 4 inference.json, the base's three
    shared = {}
    for a, b in itertools.combinations(counted, 2):
        common = set(counted[a]) & set(counted[b])
        shared[(a.relative_to(BUNDLES), b.relative_to(BUNDLES))] = sum(line in common for line in counted[a])
    worst = max(shared.items(), key=lambda kv: kv[1])
    assert worst[1] <= 30, f"{worst[0]} share {worst[1]} lines"


def test_no_config_expression_holds_an_inline_if_else():
    def strings(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    offenders = [
        (str(p.relative_to(REPO)), s[:80])
        for p in _configs()
        for s in strings(json.loads(p.read_text()))
        if s.startswith("$") and re.search(r"\bif\b.*\belse\b", s)
    ]
    assert not offenders, offenders


def test_a_bundle_names_only_its_own_settings():
    """A bundle's train.json holds no key that the base defines with the same value (it would be a copy)."""
    base = json.loads((SHARED / COMMON).read_text())
    for bundle in list_bundles():
        own = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())
        copies = [k for k, v in own.items() if k in base and base[k] == v]
        assert not copies, (bundle, copies)


@pytest.fixture(scope="module")
def la_data(tmp_path_factory):
    """A tiny LA-like folder in the UA-MT layout, prepared as the LA bundle's docs say (1 labelled, 1 validation)."""
    from _ssl4mis import make_la_like

    from medssl.data.ssl4mis import prepare_ssl4mis

    root = tmp_path_factory.mktemp("la_base")
    make_la_like(root / "raw", cases=4, size=32)
    prepare_ssl4mis(root / "raw", root / "data", labeled=(1,), num_classes=2, val_from_train=1)
    return root / "data"


def test_training_configs_pass_monais_property_check(workflow, lung_data, brats_data, brats2d_data, acdc_data,
                                                     la_data, tmp_path):  # fmt: skip
    net = {"network_channels": [4, 8, 16, 32], "embed_dim": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 16}
    data = {
        "lung_vessel_ct_ssl_segmentation": {"dataset_dir": str(lung_data / "data"), "roi_size": [16, 16, 16]},
        "brats_mri_transbts_ssl_segmentation": {"datalist": str(brats_data / "data" / "dataset.json"),
                                                "roi_size": [32, 32, 32], **net},
        "brats_mri_axial_slices_ssl_segmentation": {"dataset_dir": str(brats2d_data / "slices"), "roi_size": [32, 32],
                                                    **net},
        "acdc_mri_ssl_segmentation": {"dataset_dir": str(acdc_data), "roi_size": [32, 32]},
        "la_mri_ssl_segmentation": {"dataset_dir": str(la_data), "labeled_cases": 1, "roi_size": [16, 16, 16],
                                    "scale": 0.5},
    }  # fmt: skip
    assert set(data) == set(list_bundles())
    for bundle, values in data.items():
        wf = workflow(bundle, ["train.json"], {"bundle_root": str(tmp_path / bundle), "num_workers": 0, **values})
        assert wf.check_properties() == [], bundle  # every required property, optional ones under the right ID


def test_a_renamed_setting_is_refused_with_its_new_name(workflow, lung_data, tmp_path):
    with pytest.raises(RuntimeError) as raised:
        workflow("lung_vessel_ct_ssl_segmentation", ["train.json"],
                 {"bundle_root": str(tmp_path), "dataset_dir": str(lung_data / "data"), "threshold_mode": "per_pixel"})
    assert re.search("threshold_mode.*renamed.*threshold_scope.*method#cut", str(raised.value.__cause__))


def _inference_cases(lung_data, brats_data, brats2d_data, acdc_data, la_data):
    net = {"network_channels": [4, 8, 16, 32], "embed_dim": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 16}
    return {
        "lung_vessel_ct_ssl_segmentation": {"dataset_dir": str(lung_data / "data" / "imagesTr"),
                                            "roi_size": [16, 16, 16]},
        "brats_mri_transbts_ssl_segmentation": {"datalist": str(brats_data / "data" / "dataset.json"),
                                                "roi_size": [32, 32, 32], **net},
        "brats_mri_axial_slices_ssl_segmentation": {"dataset_dir": str(brats2d_data / "slices"), "roi_size": [32, 32],
                                                    **net},
        # the shipped weights
        "la_mri_ssl_segmentation": {"dataset_dir": str(la_data / "images"),
                                    "bundle_root": str(BUNDLES / "la_mri_ssl_segmentation")},
        "acdc_mri_ssl_segmentation": {"dataset_dir": str(acdc_data / "images"),
                                      "bundle_root": str(BUNDLES / "acdc_mri_ssl_segmentation")},
    }  # fmt: skip


def test_inference_configs_pass_monais_property_check(workflow, lung_data, brats_data, brats2d_data, acdc_data,
                                                      la_data, tmp_path):  # fmt: skip
    import torch
    from monai.bundle import ConfigParser

    cases = _inference_cases(lung_data, brats_data, brats2d_data, acdc_data, la_data)
    assert set(cases) == set(list_bundles())
    for bundle, values in cases.items():
        if not (BUNDLES / bundle / "models" / "model.pt").is_file():  # weights of the configured network, as a run leaves them
            parser = ConfigParser()
            parser.read_config(str(BUNDLES / bundle / "configs" / "inference.json"))
            parser.update({k: v for k, v in values.items() if k in parser})
            weights = tmp_path / bundle / "models" / "model.pt"
            weights.parent.mkdir(parents=True)
            torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
            values = {**values, "bundle_root": str(tmp_path / bundle)}
        wf = workflow(bundle, ["inference.json"], {**values, "output_dir": str(tmp_path / bundle / "out")})
        assert wf.check_properties() == [], bundle  # a list (not None): the infer properties were checked


@pytest.mark.parametrize("problem, message", [("missing", "no such folder of images"), ("empty", "no \\*.nii.gz image")])
def test_inference_refuses_a_missing_or_empty_folder_in_one_line(tmp_path, problem, message):
    import subprocess
    import sys

    folder = tmp_path / "images"
    if problem == "empty":
        folder.mkdir()
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir",
           str(folder), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(cmd, cwd=BUNDLES / "acdc_mri_ssl_segmentation", capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert str(folder) in last and re.search(message, last), result.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_bundle_without_weights_says_to_train_it_first(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "case.nii.gz").write_bytes(b"")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir",
           str(folder), "--bundle_root", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(cmd, cwd=BUNDLES / "lung_vessel_ct_ssl_segmentation", capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "model.pt: checkpoint not found: this bundle ships no trained weights" in last and "train it first" in last


def test_bundle_docs_link_nothing_outside_the_bundle():
    """An exported bundle and the wheel's carry their own docs: every relative link stays inside the bundle."""
    for bundle in list_bundles():
        readme = BUNDLES / bundle / "docs" / "README.md"
        for target in re.findall(r"\]\(([^)#]+)\)", readme.read_text()):
            if "://" in target:
                continue
            resolved = (readme.parent / target).resolve()
            assert resolved.is_relative_to((BUNDLES / bundle).resolve()) and resolved.exists(), (readme, target)


def test_every_listed_name_is_an_ssl_method_and_the_docs_name_only_those(workflow, lung_data, tmp_path):
    """`medssl methods` lists methods and variants as the names a bundle takes as ``ssl_method``: a variant runs as its
    method with its settings (the same losses), and the bundle READMEs name no other."""
    from ignite.engine import Events

    from medssl.methods import REGISTRY, VARIANTS, describe, method_of

    listed = set(REGISTRY) | set(VARIANTS)
    assert all(name in " ".join(describe()) for name in listed)
    for name in listed:
        method_of(name)  # accepted
    losses = {}
    common = {"dataset_dir": str(lung_data / "data"), "roi_size": [16, 16, 16], "num_workers": 0, "cache_rate": 0.0,
              "epochs": 1, "method#warmup": 0, "method#ramp": 0, "method#threshold": 0.05}  # fmt: skip
    for key, values in (("variant", {"ssl_method": "fixmatch_t05"}),
                        ("method", {"ssl_method": "fixmatch", "method#threshold": 0.5})):  # fmt: skip
        wf = workflow("lung_vessel_ct_ssl_segmentation", ["train.json"],
                      {**common, **values, "bundle_root": str(tmp_path / key)})  # fmt: skip
        trainer = wf.parser.get_parsed_content("train#trainer")
        seen = losses[key] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, seen=seen: seen.append(float(e.state.output["loss"])))
        wf.run()
        wf.finalize()
    assert losses["variant"] == losses["method"] and len(losses["variant"]) > 0
    for bundle in list_bundles():
        text = (BUNDLES / bundle / "docs" / "README.md").read_text()
        named = set(re.findall(r"--ssl_method (\w+)", text))
        table = re.search(r"\| `ssl_method` \|[^\n]*\n\|[-| ]+\|\n((?:\|[^\n]*\n)+)", text)
        named |= set(re.findall(r"^\| `(\w+)`", table.group(1), flags=re.M)) if table else set()
        named |= set(re.findall(r"`(\w+)`", "".join(re.findall(r"The newer methods work the same way:[^.]*", text))))
        assert named and named <= listed, (bundle, sorted(named - listed))


def test_metadata_reports_only_measured_figures():
    """A bundle that ships weights reports their measured test figures; one that ships none says so and reports
    none (no placeholder 0.0 to be read as a result)."""
    for bundle in list_bundles():
        meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
        if (BUNDLES / bundle / "models" / "model.pt").is_file():
            assert meta["eval_metrics"] and all(0 < v for v in meta["eval_metrics"].values()), bundle
            assert meta["network_settings"], bundle
        else:
            assert meta["eval_metrics"] == {} and "no trained weights" in meta["description"], bundle
