from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medssl.cli import build_parser, main


def test_synth_then_split(tmp_path, capsys):
    assert main(["synth", "--task", "lung_vessel", "--cases", "4", "--size", "32", "--seed", "3", "--out", str(tmp_path / "d")]) == 0
    dataset = tmp_path / "d" / "dataset.json"
    assert len(json.loads(dataset.read_text())["training"]) == 4
    out = tmp_path / "split.json"
    assert main(["split", "--datalist", str(dataset), "--labeled-fraction", "0.5", "--test-fraction", "0.25", "--seed", "1", "--out", str(out)]) == 0
    split = json.loads(out.read_text())
    assert len(split["training"]) == 2 and len(split["unlabeled"]) == 1 and len(split["testing"]) == 1
    assert "wrote" in capsys.readouterr().out


def test_synth_variation_reaches_the_dataset_and_names_the_phantom_choices(tmp_path):
    from medssl.commands._arguments import PHANTOM_VARIATIONS
    from medssl.data.phantoms import VARIATIONS

    assert PHANTOM_VARIATIONS == VARIATIONS
    argv = ["synth", "--task", "lung_vessel", "--cases", "2", "--size", "32", "--variation", "scanner"]
    assert main([*argv, "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["variation"] == "scanner"
    from medssl.demo import DEMO_VARIATION

    assert build_parser().parse_args(["demo", "--gap"]).variation == DEMO_VARIATION == "scanner"
    assert build_parser().parse_args(["synth", "--task", "brats", "--out", "x"]).variation == "case"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["split", "--datalist", "{tmp}/absent.json", "--labeled-fraction", "0.5", "--out", "{tmp}/s.json"], ["absent.json", "not found"]),
        (["synth", "--task", "brats", "--cases", "0", "--out", "{tmp}/x"], ["cases"]),
        (["synth", "--task", "brats", "--variation", "scanner", "--out", "{tmp}/x"], ["scanner", "lung_vessel"]),
        (["prepare", "brats", "--root", "{tmp}/nothing", "--out", "{tmp}/o"], ["nothing"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medssl ")
    for word in words:
        assert word in err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "medssl", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("synth", "prepare", "split", "demo"):
        assert command in result.stdout


def test_pseudolabel_overrides_are_parsed_as_literals():
    args = build_parser().parse_args(
        ["pseudolabel", "--bundle", "b", "--datalist", "d.json", "--out", "o",
         "--override", "roi_size=[64, 64, 64]", "--override", "embed_dim=32", "--override", "checkpoint=/x/m.pt"]
    )
    assert dict(args.override) == {"roi_size": [64, 64, 64], "embed_dim": 32, "checkpoint": "/x/m.pt"}
    assert build_parser().parse_args(["pseudolabel", "--bundle", "b", "--datalist", "d", "--out", "o"]).override is None


def test_pseudolabel_override_without_equals_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pseudolabel", "--bundle", "b", "--datalist", "d", "--out", "o", "--override", "x"])
    assert exc.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_version(capsys):
    import medssl

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"medssl {medssl.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["bundle", "list"], ["methods"]])
def test_commands_that_need_no_network_import_neither_torch_nor_monai(argv):
    """Start-up time: building every command's parser, ``--version``, ``bundle list`` and ``methods`` import neither
    torch nor MONAI (about 8 s of imports on a 2-core machine; ``bundle list`` and ``methods`` imported both)."""
    code = (
        "import sys, runpy; sys.argv = ['medssl', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('medssl', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')], file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"
