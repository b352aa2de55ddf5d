"""The speed benchmark on tiny sizes: FLOP counting, the report's fields, the command line and the bundles' networks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medssl.bench import measure, speed, speed_report, speed_train
from medssl.workflows import sizes
from medssl.commands import bench

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "device": "cpu", "threads": None, "phases": list(speed.PHASES), "robust_loss": "gce",
    "train_roi": [16, 16, 16], "n_labeled": 2, "n_unlabeled": 2, "train_repeats": 1,
    "ct_shape": [1, 32, 32, 24], "ct_roi": [16, 16, 16], "ct_sw_batch_size": 4, "infer_repeats": 1,
    "brats_shape": [4, 16, 16, 16], "brats_roi": [16, 16, 16], "brats_sw_batch_size": 2, "brats_repeats": 1,
    "matmul_size": 256, **speed._LA_QUICK,
}  # fmt: skip


@pytest.mark.parametrize("c_in,c_out,k,size,padding", [(2, 3, 3, 8, 1), (1, 4, 3, 9, 0), (4, 2, 1, 5, 0)])
def test_conv3d_flops(c_in, c_out, k, size, padding):
    conv = torch.nn.Conv3d(c_in, c_out, k, padding=padding)
    out_voxels = (size + 2 * padding - k + 1) ** 3
    assert measure.count_flops(conv, torch.zeros(2, c_in, size, size, size)) == 2 * 2 * c_in * c_out * k**3 * out_voxels


def test_matmul_rate_is_positive():
    assert measure.matmul_gflops(torch.device("cpu"), n=128, repeats=2) > 0


@pytest.fixture(scope="module")
def report():
    return speed.run_benchmark(TINY, isolate=False, log=lambda s: None)


def test_report_fields(report):
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch"] == torch.__version__ and machine["gpu"] is None
    assert machine["matmul_gflops_fp32"] > 0 and machine["date"]
    train = report["phases"]["train"]
    assert set(train["methods"]) == set(speed_train.TRAIN_METHODS) and train["images_per_iteration"] == 4
    assert train["methods"]["supervised"]["ratio_to_supervised"] == 1.0
    assert all(r["median_s"] > 0 for r in train["methods"].values())
    assert all(len(r["ratios"]) == TINY["train_repeats"] for r in train["methods"].values())
    assert train["methods"]["segpl"]["ratio_to_supervised"] == pytest.approx(
        train["methods"]["segpl"]["median_s"] / train["methods"]["supervised"]["median_s"], rel=1e-2
    )  # one round: the median ratio is that round's ratio
    for name, n_windows in (("infer_ct", 3 * 3 * 2), ("infer_brats", 1)):
        r = report["phases"][name]
        assert r["plain"]["windows"] == r["tuned"]["windows"] == n_windows
        assert r["plain"]["sw_batch_size"] == 1
        for path in ("plain", "tuned"):
            p = r[path]
            voxels = torch.tensor(r["shape"][1:]).prod().item()
            # median_s is rounded to 1 ms: voxels_per_s (from the unrounded time) lies within what that allows
            assert voxels / (p["median_s"] + 5e-4) - 1 <= p["voxels_per_s"] <= voxels / (p["median_s"] - 5e-4) + 1
            # the report rounds GFLOP/s to 0.01: on a slow or loaded machine that is more than 1%
            expected = r["flops_per_window"] * n_windows / p["median_s"] / 1e9
            assert p["gflops"] == pytest.approx(expected, rel=1e-2, abs=5e-3)
            # the fraction comes from the unrounded rates; the report rounds it to 0.001, GFLOP/s to 0.01 and the
            # matmul rate to 0.1 (on a loaded machine the tiny sizes run near 1 GFLOP/s, where that is several %)
            expected = p["gflops"] / r["matmul_gflops"]
            tolerance = 1e-3 + expected * (5e-3 / max(p["gflops"], 1e-3) + 5e-2 / r["matmul_gflops"])
            assert p["fraction_of_matmul"] == pytest.approx(expected, abs=tolerance)
            assert p["peak_memory_mib"] > 0
        # the rewrites change nothing beyond float rounding
        assert r["agreement"]["max_abs_prob_diff"] < 1e-4 and r["agreement"]["dice"] > 0.999
        assert r["process_peak_rss_mib"] >= r["rss_after_imports_mib"] > 0
    la = report["phases"]["train_la"]
    assert set(la["methods"]) == set(speed_train.TRAIN_METHODS) and la["network"].startswith("LA UNet")
    assert (la["n_labeled"], la["n_unlabeled"], la["roi"]) == (2, 2, [32, 32, 32])
    val = report["phases"]["validate_la"]
    assert val["volumes"] == 2 and val["zoomed_shape"] == [24, 20, 16] and val["median_s_per_volume"] > 0
    assert val["median_s"] == pytest.approx(val["median_s_per_volume"] * 2, abs=2e-3)
    assert set(report["targets"]) == {
        "segpl_iteration_ratio", "bpl_iteration_ratio", "infer_ct_fraction_of_matmul", "infer_brats_fraction_of_matmul"
    }  # fmt: skip


def test_flops_per_window_of_the_lung_network(report):
    per_window = measure.count_flops(sizes.lung_network().eval(), torch.zeros(1, 1, 16, 16, 16))
    assert report["phases"]["infer_ct"]["flops_per_window"] == per_window


def test_reports_written_atomically(report, tmp_path):
    json_path, md_path = speed_report.write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["phases"].keys() == report["phases"].keys()
    md = md_path.read_text()
    assert "| segpl |" in md and "MONAI plain" in md and "of matmul" in md and "## Targets" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def _parse(*argv: str):
    parser = argparse.ArgumentParser(prog="medssl bench")
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_command_line(tmp_path, capsys):
    args = _parse("speed", "--quick", "--phases", "infer_ct", "--ct-shape", "1x32x32x32", "--out", str(tmp_path))
    cfg = speed.config_from_args(args)
    assert cfg["phases"] == ["infer_ct"] and cfg["ct_shape"] == [1, 32, 32, 32]
    full = speed.config_from_args(_parse("speed"))
    assert full["ct_shape"] == [1, 256, 256, 200] and full["brats_shape"] == [4, 240, 240, 155]
    assert full["ct_roi"] == [96, 96, 96] and full["brats_roi"] == [128, 128, 128]
    for bad in (["--ct-shape", "1x-2x3"], ["--phases", "nope"], ["--robust-loss", "mse"]):
        with pytest.raises(SystemExit):
            _parse("speed", *bad)
    with pytest.raises(ValueError, match="train-repeats"):
        speed.config_from_args(_parse("speed", "--train-repeats", "0"))


def test_bench_command_imports_no_benchmark_until_it_runs():
    """``medssl`` builds the parser of every command on each call: ``bench``'s imports neither torch nor MONAI."""
    import subprocess
    import sys

    code = (
        "import argparse, sys, medssl.commands.bench as b; b.add_arguments(argparse.ArgumentParser()); "
        "print([m for m in sys.modules if m.startswith(('torch', 'monai', 'pandas', 'medssl.bench'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "bundle,build",
    [
        ("lung_vessel_ct_ssl_segmentation", lambda: sizes.lung_network()),
        ("brats_mri_transbts_ssl_segmentation", lambda: sizes.brats_network()),
    ],
)
def test_networks_are_the_bundles(bundle, build):
    parser = ConfigParser()
    parser.read_config([str(ROOT / "bundles" / bundle / "configs" / c) for c in ("common.json", "train.json")])
    expected = {k: v.shape for k, v in parser.get_parsed_content("network_def").state_dict().items()}
    assert {k: v.shape for k, v in build().state_dict().items()} == expected


def test_validation_share_and_report(report):
    val = {**report["phases"]["validate_la"], "median_s": 30.0, "val_interval": 200}
    # 30 s of validation every 200 iterations of 0.6 s: 30 / (30 + 120)
    assert speed_report.validation_share(val, 0.6) == pytest.approx(0.2)
    text = speed_report.to_markdown(report)
    assert "LA UNet, CPU protocol" in text and "## Validation pass (LA CPU protocol: 2 volumes of 48x40x32" in text
    assert text.count("| fixmatch |") == 3  # the lung and LA training tables, the validation share


def test_la_network_is_the_tracks():
    """The speed benchmark's LA network is the LA bundle's with the LA track's CPU-protocol settings."""
    from medssl.bench.tracks import TRACKS

    bundle = ROOT / "bundles" / "la_mri_ssl_segmentation" / "configs"
    parser = ConfigParser()
    parser.read_config([str(bundle / c) for c in ("common.json", "train.json")])
    overrides = TRACKS["la"].protocols["cpu"].overrides
    for key in ("num_res_units", "roi_size"):
        parser[key] = overrides[key]
    expected = {k: v.shape for k, v in parser.get_parsed_content("network_def").state_dict().items()}
    assert {k: v.shape for k, v in sizes.la_network().state_dict().items()} == expected
    assert parser["network_norm"] == sizes.LA_CPU.norm
    assert parser.get_parsed_content("feature_channels") == sizes.LA_CPU.feature_channels


@pytest.mark.slow
def test_command_quick_isolated(tmp_path):
    assert bench.run(_parse("speed", "--quick", "--device", "cpu", "--train-repeats", "2", "--out", str(tmp_path))) == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    assert set(report["phases"]) == set(speed.PHASES)
    assert all(p["process_peak_rss_mib"] > 0 for p in report["phases"].values())
    assert (tmp_path / "speed.md").read_text().startswith("# Speed benchmark")


def test_update_keeps_the_phases_not_rerun(report):
    earlier = {**report, "phases": {k: {**v, "date": "2026-01-01T00:00:00+00:00"} for k, v in report["phases"].items()}}
    rerun = {**report, "phases": {"train": report["phases"]["train"]}}
    merged = speed.merge_reports(earlier, rerun)
    assert list(merged["phases"]) == list(speed.PHASES)
    assert merged["phases"]["train"] is report["phases"]["train"]
    assert merged["phases"]["infer_ct"]["date"] == "2026-01-01T00:00:00+00:00"
    assert set(merged["kept_from_earlier"]) == set(speed.PHASES) - {"train"}
    assert "infer_ct_fraction_of_matmul" in merged["targets"]
    assert "Phase `infer_ct` is kept from an earlier run" in speed_report.to_markdown(merged)
    assert speed.merge_reports({"phases": {}}, rerun) is rerun


def test_update_names_the_machine_and_run_a_kept_phase_came_from(report):
    """A phase kept twice keeps its first run's date; one from another CPU is flagged as such."""
    old_machine = {**report["machine"], "cpu": "Other CPU", "matmul_gflops_fp32": 50.0, "date": "2026-01-02"}
    earlier = {**report, "machine": old_machine, "kept_from_earlier": {"infer_brats": {"date": "2026-01-01"}}}
    merged = speed.merge_reports(earlier, {**report, "phases": {"train": report["phases"]["train"]}})
    kept = merged["kept_from_earlier"]
    assert kept["infer_brats"]["date"] == "2026-01-01"
    assert kept["infer_ct"]["cpu"] == "Other CPU" and kept["infer_ct"]["matmul_gflops_fp32"] == 50.0
    text = speed_report.to_markdown(merged)
    date = merged["phases"]["infer_ct"].get("date", "2026-01-02")
    assert f"Phase `infer_ct` is kept from an earlier run ({date}; Other CPU, fp32 matmul 50.0 GFLOP/s; another" in text
    same_cpu = speed.merge_reports(report, {**report, "phases": {"train": report["phases"]["train"]}})
    assert "another machine" not in speed_report.to_markdown(same_cpu)


def test_la_phases_take_the_tracks_protocol():
    from medssl.bench.tracks import TRACKS

    cfg, proto = speed.default_config(), TRACKS["la"].protocols["cpu"]
    assert cfg["la_roi"] == proto.overrides["roi_size"] and cfg["la_scale"] == proto.overrides["scale"]
    assert (cfg["la_n_labeled"], cfg["la_n_unlabeled"]) == (4, 4) and cfg["la_val_interval"] == proto.val_interval
