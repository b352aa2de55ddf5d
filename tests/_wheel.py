"""medssl as ``pip install medssl`` leaves it: the wheel built from a clean copy of the sources and installed with
``--no-deps`` into a folder of its own, put first on ``PYTHONPATH`` (MONAI and torch come from this environment, while
``import medssl`` is the wheel's, not the source tree's).

Built once per test session: pytest-xdist's workers share the parent of their base temporary folder, and a file lock
lets the first worker build while the others wait and reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]


def _build(root: Path) -> None:
    from medssl.workflows.bundle import _not_shipped

    source = root / "source"  # a clean copy: setuptools' build/ folder of the checkout may hold deleted modules
    ignore = lambda folder, names: _not_shipped(folder, names) | {n for n in names if n.endswith(".pyc")}  # noqa: E731
    source.mkdir(parents=True)
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("medssl", "bundles"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)],
        capture_output=True, text=True, encoding="utf-8",
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("medssl-*.whl"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(root / "site"), str(wheel)],
        capture_output=True, text=True, encoding="utf-8",
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    (root / "done").touch()


def installed_wheel(tmp_path_factory) -> tuple[Path, dict]:
    """``(root, env)``: the wheel installed under ``root / "site"`` and an environment that imports it."""
    # under xdist each worker's base folder sits in the session's; without it the base folder is the session's
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "medssl_wheel"
    with FileLock(str(shared / "medssl_wheel.lock")):
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)
            _build(root)
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "PYTHONWARNINGS": "ignore"}
    env.pop("MEDSSL_BUNDLES", None)
    return root, env


def run_python(args, env, cwd, timeout=600, stderr=False) -> str:
    """``python *args`` in ``cwd``; its stdout (and stderr after it with ``stderr=True``), or an assertion error with
    the ends of both streams."""
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr if stderr else result.stdout
