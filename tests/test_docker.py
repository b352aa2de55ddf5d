"""The Dockerfiles agree with setup.cfg, the README and the Makefile (no Docker engine needed)."""

from __future__ import annotations

import configparser
import glob
import json
import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda", "Dockerfile.deploy"]
TORCH_PIN = re.compile(r"pip install torch==([0-9][0-9.]*)")


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (REPO / "docker" / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.M)]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    return cfg


def _torch_requirement() -> Requirement:
    requires = [Requirement(r) for r in _setup_cfg()["options"]["install_requires"].split("\n") if r.strip()]
    return next(r for r in requires if r.name == "torch")


def _base_python(from_args: str) -> str | None:
    m = re.match(r"python:(\d+\.\d+)", from_args)
    return m.group(1) if m else None


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist(name):
    copies = [args for op, args in _instructions(name) if op == "COPY"]
    assert copies, f"{name} copies nothing"
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert glob.glob(str(REPO / src)), f"{name}: COPY {src} names no file of the repository"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_fits_python_requires_and_torch_range(name):
    [base] = [args for op, args in _instructions(name) if op == "FROM"]
    python = _base_python(base)
    if python is not None:
        assert python in SpecifierSet(_setup_cfg()["options"]["python_requires"]), f"{name}: {base}"
    m = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", base)
    if m is not None:  # the CUDA base brings its own torch: it must satisfy install_requires
        assert m.group(1) in _torch_requirement().specifier, f"{name}: {base} vs {_torch_requirement()}"
    assert python is not None or m is not None, f"{name}: unexpected base image {base}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_pip_steps_match_readme_and_setup_cfg(name):
    runs = " ".join(args for op, args in _instructions(name) if op == "RUN").replace('"', "")
    readme_pins = set(TORCH_PIN.findall((REPO / "README.md").read_text()))
    makefile_pins = set(TORCH_PIN.findall((REPO / "Makefile").read_text()))
    assert len(readme_pins) == 1 and readme_pins == makefile_pins, (readme_pins, makefile_pins)
    pins = set(TORCH_PIN.findall(runs))
    if name == "Dockerfile.cuda":
        assert not pins, "the CUDA image keeps its base image's torch"
    else:
        assert pins == readme_pins, f"{name} pins torch {pins}, the README {readme_pins}"
        assert runs.index("pip install torch") < runs.index("pip install ."), "torch must come first"
        assert next(iter(pins)) in _torch_requirement().specifier
    installs = re.findall(r"pip install \.(\[[^\]]*\])?", runs)
    assert installs, f"{name} does not install medssl from the source tree"
    extras = {e.strip() for group in installs for e in group.strip("[]").split(",") if e.strip()}
    known = set(_setup_cfg()["options.extras_require"])
    assert extras <= known, f"{name} names extras {extras - known} that setup.cfg does not define"
    if name == "Dockerfile.deploy":
        assert extras == {"deploy"}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entry_point_matches_console_script(name):
    [entry] = [args for op, args in _instructions(name) if op == "ENTRYPOINT"]
    command = json.loads(entry)
    scripts = dict(
        (k.strip(), v.strip())
        for k, v in (line.split("=") for line in _setup_cfg()["options.entry_points"]["console_scripts"].split("\n") if line)
    )
    if name == "Dockerfile.deploy":
        assert command == ["python", "-m", "medssl.deploy"]
        assert (REPO / "medssl" / "deploy" / "__main__.py").is_file()
    else:
        assert command == ["medssl"] and scripts["medssl"] == "medssl.cli:main"


def test_dockerignore_keeps_what_is_copied():
    for name in DOCKERFILES:
        ignore = (REPO / "docker" / f"{name}.dockerignore").read_text()
        for args in (args for op, args in _instructions(name) if op == "COPY"):
            *sources, _ = shlex.split(args)
            for src in sources:
                assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"{name}.dockerignore drops {src}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_installs_the_package_with_its_bundles(name):
    """A non-editable install carries the bundles as package data (setup.py maps bundles/ into medssl/bundles), so the
    image copies what setup.py needs and sets no MEDSSL_BUNDLES."""
    instructions = _instructions(name)
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "MEDSSL_BUNDLES" not in env
    copied = [src for op, args in instructions if op == "COPY" for src in shlex.split(args)[:-1]]
    assert {"setup.py", "setup.cfg", "pyproject.toml", "medssl", "bundles"} <= set(copied)
    assert any(op == "RUN" and re.search(r"pip install \"?\.", args) for op, args in instructions)
