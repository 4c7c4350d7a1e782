"""Deployment benchmark: latency and memory of a VLA at deployment scale, per quantization variant.

No weights can be downloaded, so each family is built at a realistic size with random weights:
accuracy is not measured, only speed and memory. Per variant, in child processes of their own so
that memory figures are the variant's own:

1. prepare: build the FP32 model, quantize it (simulated mode) and save it (safetensors), which
   gives the quantization time;
2. measure: load it as a robot would (architecture, weights file, deployment on the real
   kernels with the whole model in bfloat16), then time action chunks (prefix encoding + every
   denoising step, batch 1, p50/p95 after warm-up), the prefix alone (the family's
   `prefix_modules`, timed by hooks inside the same chunks) and the head (chunk - prefix);
   optionally the same after `torch.compile` of every transformer block (inductor, freezing,
   max-autotune with its C++ AMX micro-GEMMs); and the batch-1 roofline: one token through every
   Linear of the model in turn, weight bytes over time, against the read bandwidth of a buffer
   of the same size measured in the same process.

The DA-PTQ maps use a synthetic sensitivity profile (action-head and interface layers weigh 4x
the backbone's), because the trained default's profile cannot be mapped onto a model of another
depth and width; top-k keeps 30 % of the layers in bf16, the budgeted map averages 4.5 bits.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from daptq_ros.errors import DaptqError

VARIANTS = ("fp32", "bf16", "w8a16", "w8a8", "w4a16", "daptq_topk", "daptq_budget")
SCALE_SIZES = {"pi0": "smolvla", "cogact": "large"}  # ~0.45 G parameters each
SENSITIVE_WEIGHT = 4.0  # synthetic phi of action-head and interface layers (backbone: 1)
BUDGET_BITS = 4.5
TOPK_KEEP = 0.3
IMAGE_SIZE = (96, 192)  # two 96 px views, as the embedded models
# Presets whose vision tower needs its own input: (image size, views). pi0 with SigLIP takes
# 224 px views; one view keeps the 3.5 G model's bench within this machine's time and memory.
PRESET_INPUTS = {"pi0_siglip": ((224, 224), 1)}
TEXT_TOKENS = 12
# The module whose `prepare` and `measure` stages measure each runtime's rows.
RUNTIME_MODULES = {
    "torch": "daptq_ros.evidence.deploy_bench",
    "openvino": "daptq_ros.evidence.runtime_bench",
}


def build_scaled(family: str, size: str, initialise: bool = True) -> tuple[Any, nn.Module, Any]:
    """(adapter, FP32 model with random weights, batch-1 input) of `family` at preset `size`;
    `initialise=False` skips the random initialisation, for weights loaded next."""
    from daptq_ros.policy.families import Batch, get_family
    from daptq_ros.policy.model_dir import build_for_loading

    adapter = get_family(family)
    image_size, views = PRESET_INPUTS.get(size, (IMAGE_SIZE, 2))
    config = adapter.default_config(
        size=size,
        vocab_size=512,
        max_text_length=16,
        state_dim=4,
        action_dim=4,
        horizon=8,
        image_size=image_size,
        num_views=views,
    )
    torch.manual_seed(0)
    model = (adapter.build(config) if initialise else build_for_loading(adapter, config)).eval()
    batch = Batch(
        images=torch.rand(1, 3, *image_size),
        input_ids=torch.randint(1, 512, (1, TEXT_TOKENS)),
        attention_mask=torch.ones(1, TEXT_TOKENS, dtype=torch.int64),
        state=torch.zeros(1, 4),
    )
    return adapter, model, batch


def variant_config(adapter: Any, model: nn.Module, variant: str):
    """The QuantConfig of `variant` for this model (None for fp32 and bf16: no quantization)."""
    from daptq_ros.policy.daptq import linear_layer_names, narrow_layers
    from daptq_ros.quant import QuantConfig, load_config
    from daptq_ros.quant.allocation import (
        allocate_budget,
        allocate_topk,
        bit_map_config,
        weight_error_table,
    )
    from daptq_ros.quant.kernel_fit import fit_to_kernels

    if variant in ("fp32", "bf16"):
        return None
    if not variant.startswith("daptq_"):
        return fit_to_kernels(model, load_config(variant))[0]
    names = linear_layer_names(model)
    sensitive = set(adapter.action_head_layers(model)) | set(adapter.interface_layers(model))
    phi = {n: SENSITIVE_WEIGHT if n in sensitive else 1.0 for n in names}
    costs = weight_error_table(model, names)
    never = narrow_layers(model, 128)
    if variant == "daptq_budget":
        bit_map = allocate_budget(phi, costs, BUDGET_BITS, never=never)
    else:
        bit_map = allocate_topk(phi, costs, TOPK_KEEP, never=never)
    base = QuantConfig(method="rtn", weight_bits=4, activation_bits=8, name=variant)
    return bit_map_config(base, bit_map, variant, model)


def write_scaled_model_dir(family: str, size: str, directory: Path, variant: str = "fp32") -> Path:
    """A model directory at preset `size` with random weights, quantized as `variant` (fp32
    and bf16 both write the float32 weights: bf16 is a bit config applied at load time).

    Tokenizer, normalisation, action space and image size come from the embedded pi0 model,
    so the policy node and its benches run it unchanged (bench/control_loop.py).
    """
    from dataclasses import replace

    from daptq_ros.policy.families import get_family
    from daptq_ros.policy.model_dir import (
        LoadedModel,
        default_model_dir,
        load_model_dir,
        save_model_dir,
        save_quantized_model_dir,
    )
    from daptq_ros.quant import quantize

    template = load_model_dir(default_model_dir("pi0"))
    adapter = get_family(family)
    # A preset with its own input (SigLIP's 224 px) gets it; the others the template's.
    image_size, views = PRESET_INPUTS.get(size, (template.meta.image_size, template.meta.num_views))
    config = adapter.default_config(
        size=size,
        vocab_size=template.tokenizer.vocab_size,
        max_text_length=template.tokenizer.max_length,
        state_dim=template.meta.normalizer.state_dim,
        action_dim=template.meta.normalizer.action_dim,
        horizon=template.meta.horizon,
        image_size=image_size,
        num_views=views,
    )
    torch.manual_seed(0)
    model = adapter.build(config).eval()
    provenance = {"random_weights": f"{family}/{size}: speed and memory only (daptq bench)"}
    meta = replace(template.meta, family=family, provenance=provenance)
    meta = replace(meta, image_size=image_size, num_views=views)  # (H, views x W), as config
    quant_config = variant_config(adapter, model, variant)
    if quant_config is None:
        return save_model_dir(directory, model, config, template.tokenizer, meta)
    model = quantize(model, quant_config)
    loaded = LoadedModel(model, adapter, config, template.tokenizer, meta)
    summary = {"method": quant_config.method, "config": quant_config.to_dict()}
    return save_quantized_model_dir(directory, loaded, quant_config, summary)


def prepare(family: str, size: str, variant: str, path: Path) -> dict[str, float]:
    """Build, quantize (simulated) and save one variant; its quantization time."""
    from safetensors.torch import save_model

    from daptq_ros.quant import quantize
    from daptq_ros.quant.serialization import save_quantized

    adapter, model, _ = build_scaled(family, size)
    parameters_m = sum(p.numel() for p in model.parameters()) / 1e6
    start = time.perf_counter()
    config = variant_config(adapter, model, variant)
    if config is None:
        save_model(model, str(path))
        return {"parameters_m": parameters_m, "quantize_s": 0.0}
    model = quantize(model, config)
    quantize_s = time.perf_counter() - start
    save_quantized(model, path, config)
    return {"parameters_m": parameters_m, "quantize_s": quantize_s}


def load(
    family: str,
    size: str,
    variant: str,
    path: Path,
    kernel_choice: str = "auto",
    device: str = "cpu",
) -> tuple[Any, nn.Module, Any, dict[str, dict[str, int]]]:
    """The variant as a robot loads it: architecture, weights file, deployed (bf16 model) with
    kernels measured per layer; also the kernel counts per layer group (prefix / head)."""
    from safetensors.torch import load_model

    from daptq_ros.quant.kernel_choice import deploy_measured
    from daptq_ros.quant.serialization import load_quantized

    adapter, model, batch = build_scaled(family, size, initialise=False)
    batch = batch.to(device)
    if variant == "fp32":
        load_model(model, str(path))
        return adapter, model.to(device), batch, {}
    if variant == "bf16":
        load_model(model, str(path))
    else:
        model, _ = load_quantized(model, path)

    def probe() -> None:
        with torch.inference_mode():
            adapter.sample(model, batch, None, torch.Generator().manual_seed(0))

    choices = deploy_measured(model, probe, kernel_choice, device, whole_model_bf16=True)
    return adapter, model, batch, kernels_by_group(adapter.prefix_modules(model), choices)


def kernels_by_group(prefix_modules: list[str], choices: dict[str, Any]) -> dict[str, dict]:
    """{"prefix" | "head": {kernel: layers}}: where each kernel was chosen."""
    groups: dict[str, dict[str, int]] = {"prefix": {}, "head": {}}
    for name, choice in choices.items():
        in_prefix = any(name == m or name.startswith(f"{m}.") for m in prefix_modules)
        counts = groups["prefix" if in_prefix else "head"]
        counts[choice.kernel] = counts.get(choice.kernel, 0) + 1
    return groups


def chunk_timings(
    adapter: Any, model: nn.Module, batch: Any, runs: int
) -> tuple[list[float], list[float]]:
    """Per timed chunk: total and prefix milliseconds (prefix timed by hooks, same chunks).

    On a GPU every clock reading waits for the queued kernels first."""
    spans: list[float] = []
    handles = []
    sync = torch.cuda.synchronize if batch.state.is_cuda else (lambda: None)

    def clock() -> float:
        sync()
        return time.perf_counter()

    for name in adapter.prefix_modules(model):
        module = model.get_submodule(name)
        handles.append(module.register_forward_pre_hook(lambda *_: spans.append(-clock())))
        handles.append(module.register_forward_hook(lambda *_: spans.append(clock())))
    generator = torch.Generator().manual_seed(0)
    totals, prefixes = [], []
    try:
        with torch.inference_mode():
            for _ in range(2):  # warm-up
                adapter.sample(model, batch, None, generator)
            for _ in range(runs):
                spans.clear()
                start = clock()
                adapter.sample(model, batch, None, generator)
                totals.append(1e3 * (clock() - start))
                prefixes.append(1e3 * sum(spans))
    finally:
        for handle in handles:
            handle.remove()
    return totals, prefixes


def compile_blocks(model: nn.Module) -> None:
    """torch.compile every transformer block (each child of a ModuleList), static shapes.

    Inductor with freezing and max-autotune picks, per shape, between ATen and its C++
    micro-GEMMs (AMX int4 / int8 weight-only templates on this CPU).
    """
    import torch._inductor.config as inductor

    inductor.freezing = True
    inductor.max_autotune = True
    inductor.max_autotune_gemm_backends = "CPP,ATEN"
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                block.compile(dynamic=False)


def gemv_roofline(model: nn.Module) -> dict[str, float]:
    """The batch-1 part: one token through every Linear in turn, and through the int4 ones only.

    Per stack: ms, weight MB, achieved GB/s (weight bytes / time) and its share of the read
    bandwidth of a buffer of the same size (the roofline).
    """
    from daptq_ros.quant.deploy import DeployedLinear

    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, DeployedLinear))]
    result = _stack_roofline(linears, "gemv_")
    int4 = [m for m in linears if getattr(m, "kernel", None) == "int4"]
    if int4:
        result.update(_stack_roofline(int4, "int4_gemv_"))
    return result


def _stack_roofline(linears: list[nn.Module], prefix: str) -> dict[str, float]:
    from daptq_ros.evidence.kernel_bench import median_latency_ms, read_bandwidth_gbs

    dtype = torch.float32 if any(isinstance(m, nn.Linear) for m in linears) else torch.bfloat16
    inputs = [torch.randn(1, m.in_features).to(dtype) for m in linears]
    n_bytes = sum(
        sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()]) for m in linears
    )

    def run() -> None:
        with torch.inference_mode():
            for layer, x in zip(linears, inputs, strict=True):
                layer(x)

    ms = median_latency_ms(run, warmup=3, repeats=20)
    achieved = n_bytes / (ms * 1e-3) / 1e9
    bandwidth = read_bandwidth_gbs(n_bytes)
    return {
        f"{prefix}ms": ms,
        f"{prefix}weight_mb": n_bytes / 1e6,
        f"{prefix}gbs": achieved,
        f"{prefix}read_bandwidth_gbs": bandwidth,
        f"{prefix}roofline_share": achieved / bandwidth,
    }


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(
    family: str,
    size: str,
    variant: str,
    path: Path,
    runs: int,
    with_compile: bool,
    kernel_choice: str = "auto",
    device: str = "cpu",
) -> dict[str, Any]:
    """Load one prepared variant and measure it (run in a child process of its own)."""
    from daptq_ros.quant import weight_bytes

    start = time.perf_counter()
    adapter, model, batch, kernels = load(family, size, variant, path, kernel_choice, device)
    load_s = time.perf_counter() - start
    gc.collect()
    result: dict[str, Any] = {
        "load_s": load_s,
        "weight_mb": weight_bytes(model) / 1e6,
        "kernels": kernels,
    }
    totals, prefixes = chunk_timings(adapter, model, batch, runs)
    result.update(_latencies(totals, prefixes, ""))
    result["rss_loaded_mb"] = _rss_mb()
    if device == "cpu":  # the roofline is the CPU's read bandwidth
        result.update(gemv_roofline(model))
    else:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 1e6
    if with_compile:
        compile_blocks(model)
        start = time.perf_counter()
        with torch.inference_mode():
            adapter.sample(model, batch, None, torch.Generator().manual_seed(0))
        result["compile_s"] = time.perf_counter() - start
        totals, prefixes = chunk_timings(adapter, model, batch, runs)
        result.update(_latencies(totals, prefixes, "compiled_"))
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _latencies(totals: list[float], prefixes: list[float], prefix: str) -> dict[str, float]:
    heads = [t - p for t, p in zip(totals, prefixes, strict=True)]
    return {
        f"{prefix}chunk_ms_p50": statistics.median(totals),
        f"{prefix}chunk_ms_p95": _percentile(totals, 0.95),
        f"{prefix}prefix_ms_p50": statistics.median(prefixes),
        f"{prefix}head_ms_p50": statistics.median(heads),
    }


def _child(module: str, stage: str, **kwargs: Any) -> dict[str, Any]:
    """Run `stage` of `module` (this one, or evidence.runtime_bench) in a fresh Python
    process; its JSON result."""
    command = [sys.executable, "-m", module, stage, json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        killed = " (killed: out of memory?)" if done.returncode == -9 else ""
        raise DaptqError(
            f"deploy bench: {stage} of {kwargs.get('variant')} failed "
            f"(exit {done.returncode}{killed}): {done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_deploy_bench(
    families: list[str],
    variants: list[str],
    runs: int,
    threads: int,
    with_compile: bool,
    sizes: dict[str, str] | None = None,
    progress: Callable[[str], None] = print,
    kernel_choice: str = "auto",
    device: str = "cpu",
    runtimes: tuple[str, ...] = ("torch",),
) -> dict[str, Any]:
    """Every (family, variant, runtime): prepared and measured in child processes; ratios to
    torch's FP32 / BF16 rows. OpenVINO rows (evidence/runtime_bench.py) run the exported model.

    `kernel_choice` is how each deployed layer's kernel is picked (quant.kernel_choice);
    `device` cuda measures on the GPU (refused with the reason where there is none)."""
    from daptq_ros.quant.deploy import check_device

    check_device(device)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise DaptqError(f"unknown variant '{unknown[0]}'; valid: {', '.join(VARIANTS)}")
    sizes = {**SCALE_SIZES, **(sizes or {})}
    os.environ["DAPTQ_BENCH_THREADS"] = str(threads)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []  # rows whose child process failed (e.g. out of memory)
    with tempfile.TemporaryDirectory(prefix="daptq_deploy_bench_") as scratch:
        for family in families:
            size = sizes[family]
            for runtime in runtimes:
                for variant in variants:
                    if runtime == "openvino" and variant == "bf16":
                        continue  # the export runs in float32 (bf16 is torch's row)
                    progress(f"{family}/{size}: {variant} ({runtime})")
                    common = {"family": family, "size": size, "variant": variant}
                    try:
                        row = _measured_row(
                            Path(scratch) / f"{family}_{variant}_{runtime}",
                            common,
                            runtime,
                            {"runs": runs, "with_compile": with_compile},
                            {"kernel_choice": kernel_choice, "device": device},
                        )
                    except DaptqError as error:
                        progress(f"  did not run: {str(error).splitlines()[0]}")
                        failed.append({**common, "runtime": runtime, "reason": str(error)})
                        continue
                    rows.append(row)
    _add_ratios(rows)
    from daptq_ros.evidence.kernel_bench import copy_bandwidth_gbs

    torch.set_num_threads(threads)
    return {
        "machine": machine_description(threads),
        "threads": threads,
        "runs": runs,
        "compiled": with_compile,
        "kernel_choice": kernel_choice,
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "dram_copy_bandwidth_gbs": copy_bandwidth_gbs(),
        "results": rows,
        "failed": failed,
    }


def _measured_row(
    scratch: Path,
    common: dict[str, str],
    runtime: str,
    timing: dict[str, Any],
    torch_options: dict[str, str],
) -> dict[str, Any]:
    """One variant on one runtime, prepared and measured in child processes of their own."""
    import shutil

    path = str(scratch) if runtime == "openvino" else f"{scratch}.safetensors"
    module = RUNTIME_MODULES[runtime]
    options = torch_options if runtime == "torch" else {}
    row = {**common, "runtime": runtime, **_child(module, "prepare", path=path, **common)}
    row.update(_child(module, "measure", path=path, **timing, **options, **common))
    shutil.rmtree(path) if runtime == "openvino" else Path(path).unlink()
    return row


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """x_fp32 / x_bf16 of chunk latency and weight bytes, against the same family's torch run."""
    for row in rows:
        family_rows = {
            r["variant"]: r
            for r in rows
            if r["family"] == row["family"] and r.get("runtime", "torch") == "torch"
        }
        for ref in ("fp32", "bf16"):
            if ref in family_rows:
                base = family_rows[ref]
                row[f"chunk_x_{ref}"] = row["chunk_ms_p50"] / base["chunk_ms_p50"]
                row[f"bytes_x_{ref}"] = row["weight_mb"] / base["weight_mb"]
                row[f"rss_x_{ref}"] = row["rss_loaded_mb"] / base["rss_loaded_mb"]


def machine_description(threads: int) -> dict[str, str]:
    """CPU model, cores and library versions, for the report."""
    import platform

    import torchao
    import transformers

    from daptq_ros.quant.kernel_choice import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "threads": str(threads),
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "omp": f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}",
    }


def run_stage(argv: list[str], stages: dict[str, Callable[..., dict[str, Any]]]) -> None:
    """Child-process entry: run `argv[0]` of `stages` with the JSON keyword arguments
    `argv[1]`; print its JSON result."""
    stage, kwargs = argv[0], json.loads(argv[1])
    torch.set_num_threads(int(os.environ.get("DAPTQ_BENCH_THREADS", "2")))
    kwargs["path"] = Path(kwargs["path"])
    print(json.dumps(stages[stage](**kwargs)))


if __name__ == "__main__":
    run_stage(sys.argv[1:], {"prepare": prepare, "measure": measure})
