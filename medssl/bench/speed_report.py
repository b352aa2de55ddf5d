"""The speed benchmark's report: the targets it checks, and ``speed.json`` and ``speed.md``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medssl.data.io import atomic_path, write_json

__all__ = ["SSL_TARGET", "MATMUL_TARGET", "targets", "to_markdown", "validation_share", "write_report"]

#: a semi-supervised iteration costs at most this many supervised ones (with as many images) ...
SSL_TARGET = 1.15
#: ... and medssl's inference reaches at least this fraction of the machine's fp32 matmul rate
MATMUL_TARGET = 0.5


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each target of the report: its value, the bound and whether the value meets it."""
    found: dict[str, Any] = {}
    train = report["phases"].get("train")
    if train:
        for m in ("segpl", "bpl"):
            if m in train["methods"]:
                ratio = train["methods"][m]["ratio_to_supervised"]
                target = {"value": ratio, "target": f"<= {SSL_TARGET}", "met": ratio <= SSL_TARGET}
                found[f"{m}_iteration_ratio"] = target
    for name in ("infer_ct", "infer_brats"):
        phase = report["phases"].get(name)
        if phase:
            frac = phase["tuned"]["fraction_of_matmul"]
            found[f"{name}_fraction_of_matmul"] = {
                "value": frac, "target": f">= {MATMUL_TARGET}", "met": frac >= MATMUL_TARGET,
            }  # fmt: skip
    return found


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, training-iteration ratios, inference table, memory, targets."""
    m = report["machine"]
    lines = [
        "# Speed benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} logical cores ({m['torch_threads']} torch threads), "
        f"GPU: {m['gpu'] or 'none'}; Python {m['python']}, torch {m['torch']}, MONAI {m['monai']}; device "
        f"`{m['device']}`; {m['date']}. fp32 matmul 2048^2: {m['matmul_gflops_fp32']} GFLOP/s.",
        "",
    ]
    for name, kept in report.get("kept_from_earlier", {}).items():
        cpu = kept.get("cpu")
        if cpu is None:
            where = "machine not recorded"
        else:
            where = f"{cpu}, fp32 matmul {kept.get('matmul_gflops_fp32')} GFLOP/s"
            if cpu != m["cpu"]:
                where += "; another machine: compare its figures with this run's as ratios only"
        lines += [f"Phase `{name}` is kept from an earlier run ({kept['date']}; {where}).", ""]
    for name in ("train", "train_la"):
        if name in report["phases"]:
            lines += _training_table(report["phases"][name])
    val = report["phases"].get("validate_la")
    if val:
        lines += _validation_lines(val, report["phases"].get("train_la"))
    infer = [(n, report["phases"][n]) for n in ("infer_ct", "infer_brats") if n in report["phases"]]
    if infer:
        lines += [
            "## Sliding-window inference (plain: `monai.inferers.sliding_window_inference` defaults, sw_batch_size 1, "
            "no_grad; medssl: `optimize_for_inference` + `make_sliding_window_inferer`, inference_mode)",
            "",
            "| volume | network | path | sw batch | windows | median s | Mvoxel/s | GFLOP/s | of matmul | peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in infer:
            vol = "x".join(map(str, r["shape"]))
            net = "UNet (lung)" if name == "infer_ct" else "TransBTS (BraTS 3D)"
            for path in ("plain", "tuned"):
                p = r[path]
                lines.append(
                    f"| {vol} | {net} | {'MONAI plain' if path == 'plain' else 'medssl'} | {p['sw_batch_size']} | "
                    f"{p['windows']} | {p['median_s']:.2f} | {p['voxels_per_s'] / 1e6:.2f} | {p['gflops']:.1f} | "
                    f"{100 * p['fraction_of_matmul']:.0f}% | {p['peak_memory_mib']} |"
                )
        lines += [
            "",
            "| volume | GFLOP per window | matmul GFLOP/s (same process) | speed-up | max abs prob diff | Dice | "
            "process peak RSS MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in infer:
            a = r["agreement"]
            lines.append(
                f"| {'x'.join(map(str, r['shape']))} | {r['flops_per_window'] / 1e9:.2f} | {r['matmul_gflops']} | "
                f"{r['speedup']:.2f}x | {a['max_abs_prob_diff']:.2e} | {a['dice']:.5f} | {r['process_peak_rss_mib']} |"
            )
        lines.append("")
        for name, r in infer:
            if "bf16" in r:
                b = r["bf16"]
                lines.append(
                    f"Precision check ({'x'.join(map(str, r['shape']))}, one window batch of the tuned network): bf16 "
                    f"autocast runs at {b['speed_vs_fp32']:.2f}x the speed of fp32, max abs probability difference "
                    f"{b['max_abs_prob_diff']:.2e}, Dice {b['dice']:.4f} against fp32; medssl's path stays fp32."
                )
                lines.append("")
    if report.get("targets"):
        lines += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
        for name, t in report["targets"].items():
            lines.append(f"| {name} {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def _training_table(train: dict[str, Any]) -> list[str]:
    roi = "x".join(map(str, train["roi"]))
    lines = [
        f"## Training iteration ({train.get('network', 'lung-vessel UNet')}, {train['images_per_iteration']} patches "
        f"of {roi} per iteration: supervised {train['images_per_iteration']} labelled; SSL {train['n_labeled']} "
        f"labelled + {train['n_unlabeled']} unlabelled; median of {train['repeats']} interleaved rounds)",
        "",
        "| method | median s / iteration | ratio to supervised (median) | ratio per round, min-max |",
        "|---|---|---|---|",
    ]
    for name, r in train["methods"].items():
        label = f"{name} ({train['robust_loss']})" if name == "teacher_student" else name
        spread = f"{min(r['ratios']):.2f}-{max(r['ratios']):.2f}" if r.get("ratios") else "-"
        lines.append(f"| {label} | {r['median_s']:.3f} | {r['ratio_to_supervised']:.3f} | {spread} |")
    lines += [f"\nPeak RSS of the training process: {train['process_peak_rss_mib']} MiB "
              f"(after imports: {train['rss_after_imports_mib']} MiB).", ""]  # fmt: skip
    return lines


def validation_share(val: dict[str, Any], seconds_per_iteration: float) -> float:
    """The fraction of a run's time that validation takes: one pass every ``val["val_interval"]`` iterations of
    ``seconds_per_iteration`` each."""
    training = val["val_interval"] * seconds_per_iteration
    return val["median_s"] / (val["median_s"] + training)


def _validation_lines(val: dict[str, Any], train: dict[str, Any] | None) -> list[str]:
    shape, zoomed = "x".join(map(str, val["shape"][1:])), "x".join(map(str, val["zoomed_shape"]))
    lines = [
        f"## Validation pass (LA CPU protocol: {val['volumes']} volumes of {shape}, zoomed to {zoomed}, sliding "
        f"window {'x'.join(map(str, val['roi']))}, sw batch {val['sw_batch_size']}, Dice; median of "
        f"{val['repeats']})",
        "",
        f"One pass: {val['median_s']:.2f} s ({val['median_s_per_volume']:.2f} s a volume); a run validates every "
        f"{val['val_interval']} iterations.",
    ]
    if train:
        lines += ["", "| method | validation's share of a run |", "|---|---|"]
        for name, r in train["methods"].items():
            lines.append(f"| {name} | {100 * validation_share(val, r['median_s']):.1f}% |")
    lines += [f"\nPeak RSS of the validation process: {val['process_peak_rss_mib']} MiB.", ""]
    return lines


def write_report(report: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``speed.json`` and ``speed.md`` to ``out`` atomically; return both paths."""
    out = Path(out)
    json_path = write_json(report, out / "speed.json")
    md_path = out / "speed.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(report) + "\n")
    return json_path, md_path
