"""``medssl demo`` on a tiny budget: three methods trained, the table and figures written, the budget calibrated."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from medssl.data.datalist import load_datalist
from medssl.demo import (
    DEMO_METHODS,
    DEMO_VARIATION,
    EVALUATIONS,
    MIN_ITERATIONS,
    _verdict,
    calibrate_iterations,
    label_gap,
    run_demo,
)

TINY = {
    "roi_size": [16, 16, 16],
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "feature_channels": 8,
    "num_samples": 1,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    table = run_demo(out, iterations=EVALUATIONS, cases=8, size=32, device="cpu", overrides=TINY)
    return out, table


def test_a_run_below_the_floor_warns_before_it_trains(tmp_path, capsys):
    run_demo(tmp_path, iterations=EVALUATIONS, cases=8, size=32, device="cpu", overrides=TINY)
    printed = capsys.readouterr().out
    assert f"below the {MIN_ITERATIONS} that the comparison needs" in printed
    assert printed.index("below the") < printed.index("training supervised")


def test_demo_trains_every_method_and_writes_its_table(demo):
    out, table = demo
    assert list(table["method"]) == list(DEMO_METHODS)
    assert (table["iterations"] == EVALUATIONS).all() and (table["test_cases"] == 2).all()  # 25% of 8 cases
    assert table["test_dice_mean"].between(0, 1).all() and table["best_val_dice"].between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table, check_dtype=False)
    md = (out / "results.md").read_text()
    assert all(f"| {name} |" in md for name in DEMO_METHODS)
    assert load_datalist(out / "data" / "dataset.json")["variation"] == DEMO_VARIATION and DEMO_VARIATION in md
    for name in DEMO_METHODS:
        assert (out / "runs" / name / "models" / "model_best.pt").is_file()
        # the test Dice of the table is the mean of the per-case file the evaluation wrote
        per_case = pd.read_csv(out / "runs" / name / "test" / "per_case.csv")
        dice = per_case.filter(like="dice").iloc[:, 0]
        assert table.set_index("method").loc[name, "test_dice_mean"] == pytest.approx(dice.mean(), abs=1e-6)


def test_demo_figures_are_images(demo):
    out, _ = demo
    for name in ("predictions.png", "curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 100
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_calibration_fills_the_budget_above_the_floor(demo, tmp_path):
    out, _ = demo
    cal = calibrate_iterations(
        out / "split.json", tmp_path, minutes=2.0, elapsed=5.0, device="cpu", overrides=TINY,
        methods=list(DEMO_METHODS), probe_iterations=6, min_iterations=EVALUATIONS,
    )  # fmt: skip
    assert cal.per_round > 0 and cal.per_validation > 0
    assert cal.iterations % EVALUATIONS == 0 and cal.iterations >= EVALUATIONS
    if not cal.over_budget:  # what it chose fits the two minutes, and one more round of validations would not
        assert cal.minutes <= 2.0
        assert cal.minutes + EVALUATIONS * cal.per_round / 60.0 > 2.0


def test_calibration_never_goes_below_the_floor_and_says_how_long_it_takes(demo, tmp_path):
    out, _ = demo
    cal = calibrate_iterations(
        out / "split.json", tmp_path, minutes=0.01, elapsed=0.0, device="cpu", overrides=TINY,
        methods=list(DEMO_METHODS), probe_iterations=4,
    )  # fmt: skip
    assert cal.over_budget and cal.iterations == MIN_ITERATIONS
    # the estimate is for the floor's iterations, not for the budget asked
    assert cal.minutes == pytest.approx(
        (30.0 + cal.per_validation * (EVALUATIONS + 1) + MIN_ITERATIONS * cal.per_round) / 60.0, rel=0.05
    ) and cal.minutes > 0.01


def test_demo_below_the_floor_says_so_and_a_loss_is_called_too_short(demo, capsys):
    out, table = demo
    results = (out / "results.md").read_text()
    supervised, ssl = table.set_index("method")["test_dice_mean"]
    below = f"{list(DEMO_METHODS)[-1]} ended"
    assert (below in results) == (ssl <= supervised) and ("scores" in results) == (ssl > supervised)
    worse = pd.DataFrame({"method": list(DEMO_METHODS), "test_dice_mean": [0.5, 0.3]})
    assert "too short to show" in _verdict(worse, 600) and "fewer than" not in _verdict(worse, 600)
    assert f"fewer than the {MIN_ITERATIONS}" in _verdict(worse, 40)
    better = pd.DataFrame({"method": list(DEMO_METHODS), "test_dice_mean": [0.5, 0.62]})
    assert "+0.120 test Dice" in _verdict(better, 600)


def test_demo_names_its_methods_and_size_through_the_registry_and_sizes():
    from medssl.workflows.sizes import DEMO_LUNG
    from medssl.demo import DEMO_OVERRIDES
    from medssl.methods import VARIANTS

    assert all(v in VARIANTS for v in DEMO_METHODS.values())
    assert DEMO_OVERRIDES == DEMO_LUNG.overrides() and DEMO_OVERRIDES["network_def#channels"] == [16, 32, 64, 128]


def test_demo_rejects_a_non_positive_budget(tmp_path):
    with pytest.raises(ValueError, match="minutes"):
        run_demo(tmp_path, minutes=0)


def test_label_gap_trains_supervised_at_the_demo_split_and_all_labelled(tmp_path):
    table = label_gap(
        tmp_path, iterations=EVALUATIONS, cases=8, size=32, device="cpu", overrides=TINY, variation="scanner"
    )
    assert list(table["method"]) == ["30% labelled", "100% labelled"]
    few, every = load_datalist(tmp_path / "split.json"), load_datalist(tmp_path / "split_1.00.json")
    # the same validation and test cases; all labelled turns every unlabelled case into a labelled one
    for part in ("validation", "testing"):
        assert [e["case_id"] for e in few[part]] == [e["case_id"] for e in every[part]]
    ids = lambda entries: sorted(e["case_id"] for e in entries)  # noqa: E731
    assert ids(every["training"]) == ids(few["training"] + few["unlabeled"]) and not every.get("unlabeled")
    assert load_datalist(tmp_path / "data" / "dataset.json")["variation"] == "scanner"
    gap = table["test_dice_mean"].iloc[1] - table["test_dice_mean"].iloc[0]
    assert f"= {gap:.3f} test Dice" in (tmp_path / "gap.md").read_text()
