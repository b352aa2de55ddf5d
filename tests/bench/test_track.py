"""The real-data tracks (``medssl bench accuracy --track``) on a tiny folder in the SSL4MIS layout, smoke protocol."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from _brats import write_brats_folder
from _ssl4mis import make_acdc_like

import medssl.bench.track as track_module
from medssl.bench.track import RunSpec, run_dir_of, run_one, run_specs, run_track
from medssl.bench.track_report import export_records, gap_closed, paired_difference, write_report
from medssl.bench.tracks import TRACKS
from medssl.cli import main
from medssl.data.io import read_json, write_json
from medssl.checkpoints import load_state_dict_file

ACDC = TRACKS["acdc"]


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    return make_acdc_like(tmp_path_factory.mktemp("ssl4mis") / "acdc", patients=8, slices=2, size=32)


def test_bounds_and_teacher_student_end_to_end(acdc, tmp_path):
    specs = [RunSpec("lower_bound", "3", 0), RunSpec("upper_bound", "all", 0), RunSpec("ts_gce", "3", 0)]
    results = run_track(ACDC, "smoke", specs, acdc, tmp_path, device="cpu", jobs=1)
    assert [r["method"] for r in results] == ["lower_bound", "upper_bound", "ts_gce"]
    for r in results:
        assert r["iterations"] == 4 and 0 <= r["test"]["val_mean_dice"] <= 1
        assert {"val_dice_RV", "val_dice_Myo", "val_dice_LV", "val_hd95"} <= set(r["test"])
        assert r["cpu_seconds"] > 0 and r["sittings"] == 1
    # the student read its teacher's pseudo-labels: the lower bound's predictions of every unlabelled slice
    teacher = json.loads((tmp_path / "smoke" / "teachers" / "3" / "seed0" / "datalist.json").read_text())
    assert len(teacher["unlabeled"]) == 20 and all("pseudo_label" in e for e in teacher["unlabeled"])
    # each run scored the 2 test volumes once, per volume
    table = pd.read_csv(run_dir_of(tmp_path / "smoke", specs[0]) / "test" / "per_case.csv")
    assert sorted(table["case"]) == ["patient102_frame01", "patient103_frame01"]
    # a finished run is read back, not trained again
    result = run_dir_of(tmp_path / "smoke", specs[0]) / "result.json"
    stamp = result.stat().st_mtime_ns
    run_track(ACDC, "smoke", specs[:1], acdc, tmp_path, device="cpu", jobs=1)
    assert result.stat().st_mtime_ns == stamp
    report = write_report("acdc", "smoke", tmp_path).read_text()
    assert "| lower_bound | 0 |" in report and "| ts_gce | 0 |" in report and "upper bound, seed 0" in report
    assert f"Validation in the {len(specs)} runs that timed it: " in report
    assert (tmp_path / "smoke" / "val_curves.png").is_file()
    # the records (no checkpoints) make the same report elsewhere, and copied back they stand for finished runs
    records = tmp_path / "records"
    export_records(tmp_path / "smoke", records / "smoke")
    assert not list(records.rglob("*.pt"))
    assert (run_dir_of(records / "smoke", specs[2]) / "eval" / "val_curve.csv").is_file()
    assert write_report("acdc", "smoke", records).read_text() == report
    fresh = tmp_path / "fresh"
    export_records(records / "smoke", fresh / "smoke")
    run_track(ACDC, "smoke", specs[:1], acdc, fresh, device="cpu", jobs=1)
    assert not (run_dir_of(fresh / "smoke", specs[0]) / "models").exists()


def test_interrupted_run_resumes_from_its_last_checkpoint(acdc, tmp_path, monkeypatch):
    spec = RunSpec("segpl", "3", 1)
    datalists = ACDC.prepare(acdc, tmp_path / "data")
    save = track_module._Timing.save

    def interrupted(self, *args):
        save(self, *args)
        raise KeyboardInterrupt  # the session ends after the first validation

    monkeypatch.setattr(track_module._Timing, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_one(ACDC, "smoke", spec, tmp_path, datalists, device="cpu")
    run_dir = run_dir_of(tmp_path / "smoke", spec)
    assert load_state_dict_file(run_dir / "models" / "model_last.pt")["trainer"]["iteration"] == 2
    assert not (run_dir / "result.json").exists()
    monkeypatch.setattr(track_module._Timing, "save", save)
    result = run_one(ACDC, "smoke", spec, tmp_path, datalists, device="cpu")
    assert result["sittings"] == 2
    assert load_state_dict_file(run_dir / "models" / "model_last.pt")["trainer"]["iteration"] == 4
    curve = pd.read_csv(run_dir / "eval" / "val_curve.csv")
    assert curve["iteration"].tolist() == [2, 4]  # one point per validation, none repeated by the resume
    timing = read_json(run_dir / "timing.json")
    assert timing["sittings"] == 2
    # the validation passes of both sittings, one each, and their time within the run's
    assert result["val_passes"] == timing["val_passes"] == 2
    assert 0 < timing["val_seconds"] < timing["wall_seconds"]


def test_gap_closed_per_seed():
    runs = pd.DataFrame(
        [
            {"method": "lower_bound", "setting": "3", "seed": 0, "mean_dice": 0.4},
            {"method": "upper_bound", "setting": "all", "seed": 0, "mean_dice": 0.8},
            {"method": "segpl", "setting": "3", "seed": 0, "mean_dice": 0.7},
            {"method": "lower_bound", "setting": "3", "seed": 1, "mean_dice": 0.5},
            {"method": "upper_bound", "setting": "all", "seed": 1, "mean_dice": 0.9},
            {"method": "segpl", "setting": "3", "seed": 1, "mean_dice": 0.45},
        ]
    )
    gaps = gap_closed(runs, "segpl", "3")
    assert gaps["closed"].tolist() == pytest.approx([0.75, -0.125])
    assert gaps["beats_lower"].tolist() == [True, False]
    # after a post-processing that seed 1's lower bound has not been scored with yet: seed 1 is left out, not "no"
    runs["mean_dice_lcc"] = [0.5, 0.8, 0.65, None, 0.9, 0.6]
    gaps = gap_closed(runs, "segpl", "3", "mean_dice_lcc")
    assert gaps["seed"].tolist() == [0] and gaps["closed"].tolist() == pytest.approx([0.5])


def test_paired_difference_and_its_column(tmp_path):
    rows = [("lower_bound", "1", 0, 0.50), ("upper_bound", "all", 0, 0.70), ("paired_lower_bound", "1", 0, 0.45),
            ("segpl", "1", 0, 0.52), ("lower_bound", "1", 1, 0.40), ("upper_bound", "all", 1, 0.60),
            ("paired_lower_bound", "1", 1, 0.42), ("segpl", "1", 1, 0.42), ("segpl", "1", 2, 0.9)]  # fmt: skip
    runs = pd.DataFrame([dict(zip(("method", "setting", "seed", "mean_dice"), r)) for r in rows])
    paired = paired_difference(runs, "segpl", "1")
    assert paired.seed.tolist() == [0, 1]  # seed 2 has no control
    assert paired.difference.tolist() == pytest.approx([0.07, 0.0])
    assert paired_difference(runs, "bpl_elbo", "1").empty
    for row in runs.itertuples():  # the same runs as records, then the report
        run = tmp_path / "smoke" / "runs" / row.method / row.setting / f"seed{row.seed}"
        run.mkdir(parents=True)
        result = {"method": row.method, "setting": row.setting, "seed": row.seed, "cpu_seconds": 36.0,
                  "wall_seconds": 36.0, "test": {"mean_dice": row.mean_dice}}  # fmt: skip
        (run / "result.json").write_text(json.dumps(result))
    table = write_report("brats-real", "smoke", tmp_path).read_text()
    segpl_row = next(line for line in table.splitlines() if line.startswith("| segpl |"))
    assert "| +0.035 (0.049); + = |" in segpl_row
    paired_row = next(line for line in table.splitlines() if line.startswith("| paired_lower_bound |"))
    assert paired_row.endswith("| -8% (25%) | no yes |  | 0.02 |")  # against the bounds like any method, not itself
    assert "Against the paired control" in table


def test_run_specs_run_the_upper_bound_once_per_seed():
    specs = run_specs(["lower_bound", "upper_bound", "ts_gce"], ["3", "7"], [0, 1])
    lower, upper = RunSpec("lower_bound", "3", 0), RunSpec("upper_bound", "all", 0)
    assert specs[:4] == [lower, RunSpec("lower_bound", "7", 0), upper, RunSpec("ts_gce", "3", 0)]
    assert len(specs) == 10


def test_cli_track_needs_data_and_a_known_protocol(tmp_path, capsys):
    assert main(["bench", "accuracy", "--track", "acdc", "--out", str(tmp_path)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["bench", "accuracy", "--track", "acdc", "--protocol", "fast", "--data", "x"]) == 2
    assert "protocol must be one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def brats_folder(tmp_path_factory):
    """Eight synthetic cases laid out as a BraTS 2018 folder (what ../shared/data/brats_expert_8cases holds)."""
    return write_brats_folder(tmp_path_factory.mktemp("brats_real"), cases=8, size=32, seed=2)


def test_brats_folds_hold_out_two_cases_each(brats_folder, tmp_path):
    from medssl.data.datalist import case_id, load_datalist

    datalists = TRACKS["brats-real"].prepare(brats_folder, tmp_path / "data")
    assert sorted(datalists) == sorted(f"{k}@{f}" for f in range(4) for k in ("1", "all"))
    volumes = load_datalist(tmp_path / "data" / "volumes" / "datalist.json")["training"]
    core = {case_id(e): int(np.isin(nib.load(e["label"]).get_fdata(), (1, 4)).sum()) for e in volumes}
    tested, validated = [], []
    for fold in range(4):
        one, every = (load_datalist(datalists[f"{k}@{fold}"]) for k in ("1", "all"))
        ids = {part: sorted({case_id(e) for e in one.get(part, [])}) for part in ("training", "unlabeled", "validation", "testing")}
        assert [len(ids[p]) for p in ("training", "unlabeled", "validation", "testing")] == [1, 4, 1, 2]
        assert sorted({case_id(e) for e in every["training"]}) == sorted(ids["training"] + ids["unlabeled"])
        assert all("label" not in e for e in one["unlabeled"])
        # validation: the largest tumour core (labels 1 and 4) of the non-test cases other than the labelled one
        others = ids["unlabeled"] + ids["validation"]
        assert ids["validation"] == [max(others, key=lambda c: (core[c], c))]  # ties: the later id
        tested += ids["testing"]
        validated += ids["validation"]
    assert len(set(tested)) == 8  # every case is tested once
    assert min(core, key=core.get) not in validated  # the smallest core never validates


def test_seeds_past_the_last_fold_repeat_the_folds():
    datalists = {f"{k}@{f}": Path(f"fold{f}_{k}.json") for f in range(4) for k in ("1", "all")}
    track = TRACKS["brats-real"]
    assert [track.datalist(datalists, "1", s).name for s in range(8)] == [f"fold{s % 4}_1.json" for s in range(8)]
    assert track.datalist(datalists, "all", 5) == Path("fold1_all.json")
    with pytest.raises(ValueError, match="'3' is not prepared"):
        track.datalist(datalists, "3", 0)
    acdc = {"3": Path("3.json"), "all": Path("all.json")}  # a track without folds: one datalist for every seed
    assert TRACKS["acdc"].datalist(acdc, "3", 7) == Path("3.json")


def test_brats_track_runs_with_the_fold_as_seed(brats_folder, tmp_path):
    result = run_track(TRACKS["brats-real"], "smoke", [RunSpec("lower_bound", "1", 2)], brats_folder, tmp_path, device="cpu")[0]
    assert {"val_dice_WT", "val_dice_TC", "val_dice_ET"} <= set(result["test"])
    table = pd.read_csv(run_dir_of(tmp_path / "smoke", RunSpec("lower_bound", "1", 2)) / "test" / "per_case.csv")
    fold2 = json.loads((tmp_path / "data" / "fold2_1.json").read_text())["split"]["testing"]
    assert sorted(table["case"]) == sorted(fold2)  # fold 2's two test cases, each scored as a whole volume
    report = write_report("brats-real", "smoke", tmp_path).read_text()
    assert "| method | folds | Dice | WT | TC | ET |" in report and "| lower_bound | 2 |" in report  # a seed is a fold


def test_brats_track_aligns_to_the_labelled_slices_as_the_unlabelled_crops_see_them(brats_folder, tmp_path):
    """Distribution alignment on the BraTS folds aligns to the labelled slices' class shares under the unlabelled
    pipeline's uniform crops (the labelled crops, centred half on tumour, over-state it), read by the run from its
    fold's datalist; the checkpoint keeps that marginal and loads with weights_only. Other methods get no prior."""
    from medssl.bench.track import _run_values
    from medssl.data.datalist import load_datalist
    from medssl.handlers.distribution_alignment import crop_class_shares

    track, spec = TRACKS["brats-real"], RunSpec("fixmatch_t05_da", "1", 1)
    run_track(track, "smoke", [spec], brats_folder, tmp_path, device="cpu")
    state = load_state_dict_file(run_dir_of(tmp_path / "smoke", spec) / "models" / "model_last.pt")
    labelled = load_datalist(tmp_path / "data" / "fold1_1.json")["training"]
    expected = crop_class_shares(labelled, (32, 32), 4, convention="2018")
    assert torch.allclose(state["method"]["distribution_alignment"]["labelled"], torch.tensor(expected), atol=1e-6)
    plain = _run_values(track, track.protocols["smoke"], RunSpec("fixmatch_t05", "1", 1), tmp_path, tmp_path, 4, {})
    assert "method#align_prior" not in plain


def test_la_track_prepares_the_papers_settings_and_scores_the_four_metrics(tmp_path):
    """The LA track end to end on synthetic volumes in the UA-MT layout: the first 1, 4 and 8 IDs labelled, the last 8
    of train.list for validation, a bound and a method trained in the smoke protocol and scored per test volume with
    Dice, Jaccard, HD95 and ASD."""
    from _ssl4mis import make_la_like

    from medssl.bench.tracks import LA_VALIDATION

    LA = TRACKS["la"]
    root = make_la_like(tmp_path / "la", cases=18, size=72)  # 72 x 74 x 68: at half resolution above 32^3
    datalists = LA.prepare(root, tmp_path / "data")
    assert set(datalists) == {"1", "4", "8", "all"}
    one = json.loads(datalists["1"].read_text())
    assert len(one["training"]) == 1 and len(one["validation"]) == LA_VALIDATION and len(one["unlabeled"]) == 9
    assert [e["case_id"] for e in one["validation"]] == [f"CASE{i:02d}" for i in range(10, 18)]
    specs = [RunSpec("lower_bound", "1", 0), RunSpec("fixmatch_t05", "1", 0)]
    results = run_track(LA, "smoke", specs, root, tmp_path, device="cpu", jobs=1)
    for r in results:
        assert r["iterations"] == 4 and 0 <= r["test"]["val_mean_dice"] <= 1
        assert {"val_jaccard", "val_hd95", "val_asd"} <= set(r["test"]), sorted(r["test"])
    table = pd.read_csv(run_dir_of(tmp_path / "smoke", specs[0]) / "test" / "per_case.csv")
    assert table["case"].tolist() == ["CASE18"]
    # the report carries the four metrics; the binary task's one channel is not repeated as a column
    report = write_report("la", "smoke", tmp_path).read_text()
    assert "| method | seeds | Dice | HD95 | Jaccard | ASD | best val Dice |" in report, report
    # the same checkpoints scored again after keeping the largest connected component (the LA papers' scoring)
    for r, spec in zip(results, specs):
        assert set(r["post"]["lcc"]) == set(r["test"]), r
        assert (run_dir_of(tmp_path / "smoke", spec) / "test_lcc" / "per_case.csv").is_file()
    assert "After post-processing `lcc` (largest_component True)" in report, report
    assert report.count("| method | seeds | Dice | HD95 | Jaccard | ASD | best val Dice |") == 2, report


def test_la_long_protocol_is_the_cpu_protocol_at_twice_the_length():
    """``cpu_long`` changes the length only: the same patches, network, batches and validation interval."""
    cpu, long = TRACKS["la"].protocols["cpu"], TRACKS["la"].protocols["cpu_long"]
    assert long.iterations == 2 * cpu.iterations == 6000
    assert (long.overrides, long.val_interval, long.jobs) == (cpu.overrides, cpu.val_interval, cpu.jobs)
    assert long.description == cpu.description.replace("3000 iterations", "6000 iterations")


def test_la_track_scores_a_finished_run_with_a_new_post_processing_without_training(tmp_path):
    """A run finished before its track scored the largest component gets that score when asked for again: the same
    best checkpoint, no training; a record kept without checkpoints is left as it is."""
    from _ssl4mis import make_la_like

    LA = TRACKS["la"]
    root = make_la_like(tmp_path / "la", cases=18, size=72)
    spec = RunSpec("lower_bound", "1", 0)
    first = run_track(LA, "smoke", [spec], root, tmp_path, device="cpu", jobs=1)[0]
    run_dir = run_dir_of(tmp_path / "smoke", spec)
    old = {k: v for k, v in first.items() if k != "post"}
    write_json(old, run_dir / "result.json")
    last = (run_dir / "models" / "model_last.pt").stat().st_mtime_ns
    again = run_track(LA, "smoke", [spec], root, tmp_path, device="cpu", jobs=1)[0]
    assert again["post"] == first["post"] and again["test"] == first["test"]
    assert read_json(run_dir / "result.json")["post"] == first["post"]
    assert (run_dir / "models" / "model_last.pt").stat().st_mtime_ns == last  # not trained again
    # exported records have no checkpoints: asked for again, they stay as they are
    export_records(tmp_path / "smoke", tmp_path / "records" / "smoke")
    kept = run_dir_of(tmp_path / "records" / "smoke", spec)
    assert (kept / "test_lcc" / "per_case.csv").is_file()
    write_json(old, kept / "result.json")
    assert run_track(LA, "smoke", [spec], root, tmp_path / "records", device="cpu", jobs=1)[0] == old


def test_brats3d_track_folds_are_the_2d_tracks_and_train_at_half_resolution(brats_folder, tmp_path):
    """The 3D BraTS track: the 2D track's folds as whole volumes, the TransBTS bundle trained on patches of volumes
    zoomed to half resolution, scored per test volume at full resolution."""
    from medssl.data.datalist import case_id, load_datalist

    slices = TRACKS["brats-real"].prepare(brats_folder, tmp_path / "data2d")
    volumes = TRACKS["brats3d-real"].prepare(brats_folder, tmp_path / "data3d")
    assert sorted(volumes) == sorted(slices)
    for key in volumes:
        d2, d3 = load_datalist(slices[key]), load_datalist(volumes[key])
        assert d2["split"] == d3["split"]
        for part in ("training", "unlabeled", "validation", "testing"):
            assert [case_id(e) for e in d3[part]] == sorted({case_id(e) for e in d2[part]})
            assert all(isinstance(e["image"], list) and len(e["image"]) == 4 for e in d3[part])
    spec = RunSpec("lower_bound", "1", 1)
    result = run_track(TRACKS["brats3d-real"], "smoke", [spec], brats_folder, tmp_path, device="cpu")[0]
    assert {"val_dice_WT", "val_dice_TC", "val_dice_ET"} <= set(result["test"]) and result["val_passes"] == 2
    run_dir = run_dir_of(tmp_path / "smoke", spec)
    table = pd.read_csv(run_dir / "test" / "per_case.csv")
    assert sorted(table["case"]) == load_datalist(volumes["1@1"])["split"]["testing"]
    saved = load_state_dict_file(run_dir / "models" / "model_best.pt")
    assert saved["settings"]["scale"] == 0.5 and saved["settings"]["roi_size"] == [16, 16, 16]
