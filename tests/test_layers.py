"""The library's imports run one way: commands on top, then workflows, methods, handlers, engines, the building
blocks, and the base modules at the bottom. Read from the source, not from a running interpreter."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medssl"

#: layer of each top-level part of medssl (a package or a module): a part imports parts of lower layers only
LAYERS = {
    "cli": 8, "commands": 8, "__main__": 8,
    "demo": 7, "bench": 7, "deploy": 7,
    "workflows": 6,
    "methods": 5,
    "handlers": 4,
    "engines": 3,
    "inference": 2, "losses": 2, "networks": 2, "transforms": 2, "data": 2, "visualize": 2,
    "checkpoints": 1, "device": 1,
    "checks": 0, "errors": 0, "__init__": 0,
}  # fmt: skip
#: parts of one layer that may use each other, in this direction only
SAME_LAYER = {("inference", "data"), ("inference", "transforms"), ("data", "transforms"), ("visualize", "data"),
              ("__main__", "cli")}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[1] for n in names if n.startswith("medssl.") and len(n.split(".")) > 1}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel.name == "__main__.py":  # `python -m medssl.<x>` entry points are commands
        return "__main__"
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _part(path)
        for dst in _imports(path):
            if dst != src:
                edges.setdefault((src, dst), []).append(str(path.relative_to(PACKAGE)))
    return edges


def test_every_part_has_a_layer():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), f"give these parts a layer: {sorted(parts - set(LAYERS))}"


def test_imports_point_down():
    upward = {
        f"{src} -> {dst} ({', '.join(files)})"
        for (src, dst), files in _edges().items()
        if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] and (src, dst) not in SAME_LAYER)
    }
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_two_parts_import_each_other():
    edges = _edges()
    pairs = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not pairs, f"parts that import each other: {pairs}"


def test_nothing_in_the_library_imports_the_cli():
    offenders = sorted(f for (src, dst), files in _edges().items() if dst in ("cli", "commands") and src not in ("cli", "commands", "__main__") for f in files)
    assert not offenders, offenders


def test_only_the_bench_command_imports_the_benchmarks():
    """The product's main job (the demo) and everything else train through the library (medssl.workflows.runs)."""
    offenders = sorted(f for (src, dst), files in _edges().items() if dst == "bench" for f in files
                       if f != "commands/bench.py")  # fmt: skip
    assert not offenders, offenders
