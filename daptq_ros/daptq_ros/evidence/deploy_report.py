"""docs/performance.md and its plot from a `run_deploy_bench` report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOT_SUFFIX = "_latency_vs_bytes.png"  # beside the report: performance.md -> performance_...


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"  # None or NaN


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def label(row: dict[str, Any]) -> str:
    """A row's variant, with its runtime when that is not torch."""
    runtime = row.get("runtime", "torch")
    return row["variant"] if runtime == "torch" else f"{row['variant']} ({runtime})"


def results_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: memory, load, eager chunk / prefix / head latency, ratios, roofline."""
    lines = [
        "| family / size | variant | params M | weights MB | x FP32 bytes | load s | quantize s "
        "| RSS loaded MB | peak RSS MB | chunk p50 ms | chunk p95 ms | prefix ms | head ms "
        "| x FP32 | x BF16 | batch-1 GB/s | roofline | int4 batch-1 GB/s | int4 roofline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} / {r['size']} | {label(r)} | {r['parameters_m']:.0f} "
            f"| {r['weight_mb']:.0f} | {_num(r.get('bytes_x_fp32'), 3)} | {r['load_s']:.1f} "
            f"| {r['quantize_s']:.1f} | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} "
            f"| {r['chunk_ms_p50']:.1f} | {r['chunk_ms_p95']:.1f} | {_num(r['prefix_ms_p50'])} "
            f"| {_num(r['head_ms_p50'])} | {_num(r.get('chunk_x_fp32'), 2)} "
            f"| {_num(r.get('chunk_x_bf16'), 2)} | {_num(r.get('gemv_gbs'))} "
            f"| {_share(r.get('gemv_roofline_share'))} | {_num(r.get('int4_gemv_gbs'))} "
            f"| {_share(r.get('int4_gemv_roofline_share'))} |"
        )
    return lines


def kernels_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: the kernels chosen per layer group, and the ratios the targets name."""
    gpu = any("peak_gpu_mb" in r for r in rows)
    lines = [
        "| family / size | variant | prefix kernels | head kernels | chunk p50 ms | chunk p95 ms "
        "| chunk x BF16 | weight bytes x FP32 | RSS loaded x FP32 |"
        + (" peak GPU MB |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for r in rows:
        groups = r.get("kernels") or {}
        lines.append(
            f"| {r['family']} / {r['size']} | {label(r)} "
            f"| {_counts(groups.get('prefix'))} | {_counts(groups.get('head'))} "
            f"| {r['chunk_ms_p50']:.1f} | {r['chunk_ms_p95']:.1f} "
            f"| {_num(r.get('chunk_x_bf16'), 2)} | {_num(r.get('bytes_x_fp32'), 3)} "
            f"| {_num(r.get('rss_x_fp32'), 2)} |"
            + (f" {_num(r.get('peak_gpu_mb'), 0)} |" if gpu else "")
        )
    return lines


def _counts(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{kernel} {n}" for kernel, n in sorted(counts.items()))


def compiled_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: eager vs torch.compile latency per variant."""
    lines = [
        "| family / size | variant | compile s | chunk p50 ms eager | compiled | prefix ms "
        "eager | compiled | head ms eager | compiled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "compiled_chunk_ms_p50" not in r:
            continue
        lines.append(
            f"| {r['family']} / {r['size']} | {r['variant']} | {r['compile_s']:.0f} "
            f"| {r['chunk_ms_p50']:.1f} | {r['compiled_chunk_ms_p50']:.1f} "
            f"| {r['prefix_ms_p50']:.1f} | {r['compiled_prefix_ms_p50']:.1f} "
            f"| {r['head_ms_p50']:.1f} | {r['compiled_head_ms_p50']:.1f} |"
        )
    return lines


def _runtime_note(rows: list[dict[str, Any]]) -> list[str]:
    """What the rows of another runtime are, when there are any."""
    if all(r.get("runtime", "torch") == "torch" for r in rows):
        return []
    return [
        "",
        "Rows marked *(openvino)* run the model that `daptq quantize --runtime openvino` "
        "exports (its exact integer weights; float32 activations, int8 dynamic quantization "
        "of the integer layers' inputs) on OpenVINO's CPU plugin, loaded without the torch "
        "model; their weights are the exported files, their prefix / head split is not timed, "
        "and their ratios are against torch's FP32 and BF16 rows.",
    ]


def plot_latency_vs_bytes(rows: list[dict[str, Any]], path: Path) -> Path:
    """Chunk latency (p50) against weight bytes, one marker per variant, one colour per family."""
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        points = axes.scatter(
            [r["weight_mb"] for r in mine], [r["chunk_ms_p50"] for r in mine], label=family
        )
        for r in mine:
            axes.annotate(
                label(r),
                (r["weight_mb"], r["chunk_ms_p50"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
                color=points.get_facecolor()[0],
            )
    axes.set_xlabel("weight bytes (MB)")
    axes.set_ylabel("action chunk latency p50 (ms)")
    axes.set_title("Deployed latency vs weight bytes (batch 1, CPU)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def failed_rows(failed: list[dict[str, str]]) -> list[str]:
    """The rows whose process failed, each with the first line of its error."""
    if not failed:
        return []
    lines = ["## Rows that did not run", ""]
    for row in failed:
        reason = row["reason"].splitlines()[0]
        lines.append(
            f"- {row['family']} / {row['size']}, {row['variant']} ({row['runtime']}): {reason}"
        )
    return [*lines, ""]


def write_performance_doc(
    report: dict[str, Any], path: Path, command: str, findings: str = ""
) -> Path:
    """Write the markdown report (tables, machine, command) and the plot beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_latency_vs_bytes(report["results"], path.with_name(path.stem + PLOT_SUFFIX))
    machine = report["machine"]
    lines = [
        "# Deployment performance",
        "",
        f"Generated by `{command}` (do not edit by hand; regenerate).",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {report['threads']} torch "
        f"threads, {machine['omp']}; Python {machine['python']}, "
        f"torch {machine['torch']}, torchao {machine['torchao']}, transformers "
        f"{machine['transformers']}. DRAM copy bandwidth {report['dram_copy_bandwidth_gbs']:.1f} "
        f"GB/s. Batch 1, {report['runs']} timed chunks per variant after 2 warm-up chunks. "
        f"Kernel choice `{report.get('kernel_choice', 'auto')}`: each Linear's kernel timed on "
        "this CPU for the rows it sees (quant/kernel_choice.py).",
        "",
        "Random weights at deployment scale (speed and memory only). Every variant except FP32 "
        "runs deployed with the whole model in bfloat16. *prefix* = vision + language backbone "
        "(once per chunk), *head* = every denoising step of the action head. *batch-1 GB/s* = "
        "one token through every Linear in turn (weight bytes / time), *int4* = through the "
        "int4-kernel layers only; *roofline* = that over the read bandwidth of a buffer of the "
        "same size, up to 2 GiB (a large last-level cache serves the smaller ones). *RSS "
        "loaded* = "
        "resident memory after loading and warm-up; *peak RSS* = the most resident memory of "
        "the loading and measuring process (the loader builds the architecture without "
        "initialising it, so skeleton pages that the weights never overwrite stay unmapped; "
        "file pages of the memory-mapped weights count while they are read, and so does the "
        "roofline's read buffer of up to 2 GiB).",
        *_runtime_note(report["results"]),
        "",
        "## Kernels chosen and the targets' ratios",
        "",
        *kernels_table(report["results"]),
        "",
        "## Eager",
        "",
        *results_table(report["results"]),
        "",
    ]
    if report["compiled"]:
        lines += [
            "## torch.compile (inductor, freezing, max-autotune, every transformer block)",
            "",
            *compiled_table(report["results"]),
            "",
        ]
    lines += [f"![latency vs weight bytes]({plot.name})", ""]
    lines += failed_rows(report.get("failed", []))
    if findings:
        lines += [findings.strip(), ""]
    path.write_text("\n".join(lines))
    return path
