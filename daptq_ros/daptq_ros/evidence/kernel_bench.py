"""Kernel benchmark: latency and weight bytes of each deployed format on a stack of Linears.

Every variant is built through the real deployment path (`quantize(..., deployed=True)`), timed
in the same process as the FP32 baseline, and reported as a ratio to it. The memory-bandwidth
roofline comes from a large tensor copy measured in the same run: at batch 1 a Linear stack is
bandwidth bound, so weight_bytes / bandwidth is the fastest it could possibly run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from daptq_ros.quant.api import quantize
from daptq_ros.quant.config import QuantConfig, config_from_dict, load_config
from daptq_ros.quant.deploy import weight_bytes


@dataclass
class KernelResult:
    """One (width, batch, variant) measurement."""

    width: int
    batch: int
    variant: str
    median_ms: float
    weight_bytes: int
    latency_vs_fp32: float
    bytes_vs_fp32: float
    read_bandwidth_gbs: float  # streaming a buffer as large as the weights
    roofline_share: float | None  # batch 1 only: (weight_bytes / read bandwidth) / median latency


def _mixed_config(n_layers: int) -> QuantConfig:
    """int4 g128 for the first half of the stack, bf16 for the rest."""
    kept = [f"{i}" for i in range(n_layers // 2, n_layers)]
    return config_from_dict(
        {"name": "mixed_int4_bf16", "weight_bits": 4, "group_size": 128, "keep": kept}
    )


VARIANTS: dict[str, Callable[[int], QuantConfig | None]] = {
    "fp32": lambda n: None,
    "bf16": lambda n: load_config("bf16"),
    "int8_weight_only": lambda n: load_config("w8a16"),
    "int8_dynamic": lambda n: load_config("w8a8"),
    "int4_g128": lambda n: load_config("w4a16"),
    "mixed_int4_bf16": _mixed_config,
}


def linear_stack(width: int, n_layers: int, seed: int = 0) -> nn.Sequential:
    """n_layers bias-free width x width Linears (a transformer's projections, without the rest)."""
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(n_layers)]).eval()


def build_variant(variant: str, width: int, n_layers: int) -> tuple[nn.Module, torch.dtype]:
    """The stack deployed in one variant, and the activation dtype it takes."""
    config = VARIANTS[variant](n_layers)
    model = linear_stack(width, n_layers)
    if config is None:
        return model, torch.float32
    return quantize(model, config, deployed=True), torch.bfloat16


@torch.inference_mode()
def median_latency_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs(n_bytes: int = 2 * 2**30, repeats: int = 5) -> float:
    """Main-memory copy bandwidth (bytes read + written per second), GB/s; 2 GiB defeats caches."""
    src = torch.ones(n_bytes // 8, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = median_latency_ms(lambda: dst.copy_(src), warmup=1, repeats=repeats)
    return n_bytes / (ms * 1e-3) / 1e9


READ_BUFFER_CAP = 2 * 2**30  # bytes: > 4x the last-level cache of this workplace's Xeon


def read_bandwidth_gbs(n_bytes: int, repeats: int = 20) -> float:
    """Read bandwidth of a BLAS dot product over a buffer of n_bytes, GB/s.

    Measured at each variant's own weight size, because a stack that fits the last-level cache
    (480 MiB on this workplace's Xeon) is served from cache, not from DRAM: this is the roof
    the weights can really be streamed at. Above READ_BUFFER_CAP every size streams from DRAM
    alike, so the buffer stops growing there: a 12 GB buffer beside a 12 GB FP32 model filled
    this 24 GB machine and measured 2.1 GB/s instead of ~21.
    """
    buffer = torch.ones(max(min(n_bytes, READ_BUFFER_CAP) // 4, 1024), dtype=torch.float32)
    ms = median_latency_ms(lambda: torch.dot(buffer, buffer), warmup=3, repeats=repeats)
    return buffer.numel() * 4 / (ms * 1e-3) / 1e9


def run_kernel_bench(
    widths: list[int],
    batches: list[int],
    n_layers: int,
    variants: list[str],
    warmup: int = 5,
    repeats: int = 30,
) -> dict:
    """Measure FP32 and every variant at every width and batch; ratios are against that FP32."""
    dram_bandwidth = copy_bandwidth_gbs()
    results: list[KernelResult] = []
    for width in widths:
        models = {v: build_variant(v, width, n_layers) for v in dict.fromkeys(["fp32", *variants])}
        for batch in batches:
            timings = {}
            for variant, (model, dtype) in models.items():
                x = torch.randn(batch, width).to(dtype)
                timings[variant] = median_latency_ms(lambda m=model, x=x: m(x), warmup, repeats)
            fp32_ms, fp32_bytes = timings["fp32"], weight_bytes(models["fp32"][0])
            for variant, (model, _) in models.items():
                n_bytes = weight_bytes(model)
                bandwidth = read_bandwidth_gbs(n_bytes)
                bound_ms = n_bytes / (bandwidth * 1e9) * 1e3
                results.append(
                    KernelResult(
                        width=width,
                        batch=batch,
                        variant=variant,
                        median_ms=timings[variant],
                        weight_bytes=n_bytes,
                        latency_vs_fp32=timings[variant] / fp32_ms,
                        bytes_vs_fp32=n_bytes / fp32_bytes,
                        read_bandwidth_gbs=bandwidth,
                        roofline_share=bound_ms / timings[variant] if batch == 1 else None,
                    )
                )
    return {
        "threads": torch.get_num_threads(),
        "n_layers": n_layers,
        "dram_copy_bandwidth_gbs": dram_bandwidth,
        "results": [asdict(r) for r in results],
    }


def format_table(report: dict) -> str:
    """A readable table of a run_kernel_bench report."""
    lines = [
        f"threads={report['threads']}  layers={report['n_layers']}  "
        f"DRAM copy bandwidth={report['dram_copy_bandwidth_gbs']:.1f} GB/s",
        f"{'width':>5} {'batch':>5} {'variant':<17} {'median ms':>10} {'x FP32':>7} "
        f"{'MB':>8} {'bytes x FP32':>12} {'read GB/s':>9} {'roofline':>9}",
    ]
    for r in report["results"]:
        roof = f"{r['roofline_share']:.0%}" if r["roofline_share"] is not None else "-"
        lines.append(
            f"{r['width']:>5} {r['batch']:>5} {r['variant']:<17} {r['median_ms']:>10.3f} "
            f"{r['latency_vs_fp32']:>7.2f} {r['weight_bytes'] / 1e6:>8.2f} "
            f"{r['bytes_vs_fp32']:>12.3f} {r['read_bandwidth_gbs']:>9.1f} {roof:>9}"
        )
    return "\n".join(lines)
