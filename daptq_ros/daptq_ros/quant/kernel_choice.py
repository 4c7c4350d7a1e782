"""Per-layer kernel choice by measurement, on this CPU, for the rows each layer really sees.

A VLA's Linears see very different row counts: the backbone runs once per chunk over every
prefix token (tens to hundreds of rows), the action head runs every denoising step over the
horizon (about ten rows). Which kernel is fastest depends on that, on the layer's shape and on
the CPU (AMX or not): the packed int4 kernel is several times faster than bf16 at one row and
several times slower at 64 (docs/performance.md). So deployment:

1. records the rows every Linear sees during one real call (`record_rows`);
2. times each candidate kernel of deploy.kernel_candidates on the layer's own weights, with
   those rows (a few hundred microseconds per layer shape), and caches the timings per CPU
   model, torch version and thread count (`KernelTimingCache`), so the next start reads them;
3. picks per layer by the mode (`choose_kernels`):
   - `auto` (default): the kernel holding the least memory among those at least 10 % faster
     than the same layer in bf16 (packed first, then dequantized once as bf16 or fp32), else
     the fastest. So no quantized layer runs slower than its BF16 deployment, and weights stay
     packed wherever that costs no speed against BF16. Kept (16-bit) layers stay bf16;
   - `packed`: the fastest packed kernel (least memory, whatever the speed);
   - `fastest`: the fastest kernel (memory grows where a dense kernel wins).

Every candidate computes the bit config's own arithmetic (same codes, scales and activation
quantization), so the choice changes speed and memory, never what was evaluated.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from daptq_ros.errors import DaptqError
from daptq_ros.quant.deploy import (
    FUSED_SUFFIX,
    KERNEL_WEIGHT_BYTES,
    DeployedLinear,
    deploy,
    describe_layer,
    kernel_candidates,
    packed_kernels,
    set_submodule,
    split_kernel,
)
from daptq_ros.quant.layers import QuantLinear

MODES = ("auto", "packed", "fastest")
REFERENCE_KERNEL = "bf16"  # `auto` never runs a layer slower than this
# `auto` keeps a kernel that saves memory only when it beats bf16 by this share: at small
# shapes two kernels' timings differ by a few percent from run to run (measured here).
AUTO_MARGIN = 0.1
# Fused (compiled) activation quantization is tried from this many values per call: eager took
# 34 vs 49 us at 9 x 128, 79 vs 63 at 9 x 2048, 2.7 vs 0.6 ms at 300 x 2048 (float32, here).
FUSED_MIN_VALUES = 32768
CACHE_ENV = "DAPTQ_KERNEL_CACHE"
TIMING_BUDGET_S = 0.02  # per candidate and row count: repeat until this much time has passed
MIN_REPEATS, MAX_REPEATS, WARMUP = 5, 200, 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerChoice:
    """The kernel picked for one layer, and the timings it was picked from."""

    name: str
    layer: str  # describe_layer label, e.g. "W4 asym g128 A8 2048x2048"
    rows: dict[int, int]  # rows per call -> calls in one recorded run
    timings_us: dict[str, float]  # kernel -> microseconds per recorded run (all calls)
    kernel: str

    @property
    def speedup_vs_bf16(self) -> float:
        """bf16 time over the chosen kernel's time on this layer (> 1: faster than BF16)."""
        return self.timings_us[REFERENCE_KERNEL] / self.timings_us[self.kernel]


def check_mode(mode: str) -> None:
    """A DaptqError naming the valid modes unless `mode` is one."""
    if mode not in MODES:
        raise DaptqError(f"kernel choice '{mode}' is unknown; choose one of {', '.join(MODES)}")


def record_rows(model: nn.Module, run: Callable[[], object]) -> dict[str, Counter[int]]:
    """Rows per call of every Linear (simulated, plain or deployed) while `run()` runs once."""
    rows: dict[str, Counter[int]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, nn.Linear, DeployedLinear)):
            counter = rows.setdefault(name, Counter())

            def hook(_module, inputs, _output, counter=counter) -> None:
                x = inputs[0]
                counter[x.numel() // x.shape[-1]] += 1

            handles.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return {name: counter for name, counter in rows.items() if counter}


def machine_key(device: str = "cpu") -> str:
    """What kernel timings depend on: the processor model, torch version, threads, device."""
    return (
        f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {device}"
    )


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), saying whether it has AMX."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    return f"{name} ({'AMX' if 'amx_tile' in fields.get('flags', '').split() else 'no AMX'})"


class KernelTimingCache:
    """Kernel timings per machine key and layer signature, kept in one JSON file.

    Default file: $DAPTQ_KERNEL_CACHE, else $XDG_CACHE_HOME/daptq_ros/kernel_timings.json
    (~/.cache when unset). An unreadable file is ignored and rewritten.
    """

    def __init__(self, path: Path | None = None, device: str = "cpu") -> None:
        self.path = path or default_cache_path()
        self.key = machine_key(device)
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        if not isinstance(self.data, dict):
            self.data = {}
        self.changed = False

    def get(self, signature: str) -> dict[str, float | None] | None:
        """The timings stored for `signature` on this machine, or None."""
        return self.data.get(self.key, {}).get(signature)

    def put(self, signature: str, timings: dict[str, float | None]) -> None:
        """Store timings for `signature` (written by `save`)."""
        self.data.setdefault(self.key, {})[signature] = timings
        self.changed = True

    def save(self) -> None:
        """Write the file atomically if anything was measured (a start that found every timing
        cached writes nothing); a read-only location only logs a warning."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")  # writers never collide
            partial.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
            partial.replace(self.path)
        except OSError as error:
            log.warning("kernel timings not cached (%s): the next start measures again", error)


def default_cache_path() -> Path:
    """$DAPTQ_KERNEL_CACHE, or the user cache directory's daptq_ros/kernel_timings.json."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "daptq_ros" / "kernel_timings.json"


def layer_signature(layer: QuantLinear | nn.Linear, rows: Counter[int], dtype: torch.dtype) -> str:
    """Everything a kernel's speed depends on besides the machine: format, shape, rows, dtype."""
    calls = ",".join(f"{r}x{n}" for r, n in sorted(rows.items()))
    extras = "".join(
        tag
        for tag, present in (
            (" bias", layer.bias is not None),
            (" smoothed", getattr(layer, "input_scale", None) is not None),
        )
        if present
    )
    return f"{describe_layer(layer)}{extras} rows {calls} in {str(dtype).removeprefix('torch.')}"


@torch.inference_mode()
def time_kernels(
    layer: QuantLinear | nn.Linear,
    rows: Counter[int],
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, float | None]:
    """Microseconds per recorded run (every call) of each candidate kernel on this layer.

    A candidate that fails on this machine (an op this torch build lacks) is logged and gets
    None.
    """
    timings = {}
    generator = torch.Generator().manual_seed(0)
    inputs = {
        r: torch.randn(r, layer.in_features, generator=generator).to(device, dtype) for r in rows
    }
    for kernel in timed_candidates(layer, rows):
        try:
            deployed = DeployedLinear(layer, kernel).to(device)
            timings[kernel] = sum(n * _median_us(deployed, inputs[r]) for r, n in rows.items())
        except (RuntimeError, NotImplementedError) as error:
            log.warning("kernel %s cannot run %s here: %s", kernel, describe_layer(layer), error)
            timings[kernel] = None  # cached too: this machine cannot run it
    return timings


def timed_candidates(layer: QuantLinear | nn.Linear, rows: Counter[int]) -> list[str]:
    """The layer's kernels, plus their fused-activation-quantization variants where the
    activations are large enough for fusion to pay (A8 layers, FUSED_MIN_VALUES per call)."""
    candidates = list(kernel_candidates(layer))
    if (
        getattr(layer, "activation_bits", None)
        and max(rows) * layer.in_features >= FUSED_MIN_VALUES
    ):
        candidates += [k + FUSED_SUFFIX for k in candidates if k != "int8_dynamic"]
    return candidates


def _median_us(module: nn.Module, x: torch.Tensor) -> float:
    """Median microseconds of module(x); on a GPU each call waits for its kernels."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for _ in range(WARMUP):
        module(x)
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_REPEATS or (
        len(times) < MAX_REPEATS and time.perf_counter() - started < TIMING_BUDGET_S
    ):
        start = time.perf_counter()
        module(x)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def pick(layer: QuantLinear | nn.Linear, timings: dict[str, float], mode: str) -> str:
    """The kernel `mode` picks from measured `timings` (see the module docstring)."""
    fastest = min(timings, key=timings.__getitem__)
    if mode == "fastest":
        return fastest
    if not isinstance(layer, QuantLinear):
        return REFERENCE_KERNEL  # a kept layer is the BF16 deployment itself
    packed = [k for k in timings if split_kernel(k)[0] in packed_kernels(layer)]
    if mode == "packed":
        if not packed:
            raise DaptqError(
                f"no packed kernel ran {describe_layer(layer)} on this machine; use kernel "
                "choice auto or fastest"
            )
        return min(packed, key=timings.__getitem__)
    # auto: the least memory that is clearly faster than bf16, else the fastest
    limit = (1 - AUTO_MARGIN) * timings.get(REFERENCE_KERNEL, float("inf"))
    by_memory = sorted(timings, key=lambda k: (KERNEL_WEIGHT_BYTES[split_kernel(k)[0]], timings[k]))
    return next((k for k in by_memory if timings[k] <= limit), fastest)


def choose_kernels(
    layers: dict[str, QuantLinear | nn.Linear],
    rows_by_layer: dict[str, Counter[int]],
    mode: str = "auto",
    dtype: torch.dtype = torch.float32,
    cache: KernelTimingCache | None = None,
    device: str = "cpu",
) -> dict[str, LayerChoice]:
    """Measure (or read from the cache) and pick a kernel for every layer that ran.

    `layers` are the simulated (or plain) Linears by name; `dtype` is the activation dtype
    they receive (bfloat16 when the whole model is deployed in bf16). Layers that did not run
    keep their default kernel (absent here).
    """
    check_mode(mode)
    cache = cache or KernelTimingCache(device=device)
    choices = {}
    for name, rows in rows_by_layer.items():
        layer = layers[name]
        signature = layer_signature(layer, rows, dtype)
        timings = cache.get(signature)
        if timings is None or set(timings) != set(timed_candidates(layer, rows)):
            timings = time_kernels(layer, rows, dtype, device)  # new, or candidates changed
            cache.put(signature, timings)
        timings = {kernel: us for kernel, us in timings.items() if us is not None}
        choices[name] = LayerChoice(
            name, describe_layer(layer), dict(rows), timings, pick(layer, timings, mode)
        )
    cache.save()
    return choices


def deploy_measured(
    model: nn.Module,
    run: Callable[[], object],
    mode: str = "auto",
    device: str = "cpu",
    whole_model_bf16: bool = False,
    cache: KernelTimingCache | None = None,
) -> dict[str, LayerChoice]:
    """Deploy `model` in place with each Linear's kernel measured for the rows it sees.

    The model is first deployed on its default packed kernels and `run()` (one real call,
    e.g. a chunk on a blank observation) records the rows; the layers whose measured choice
    differs are then rebuilt from their simulated source. No float copy of the whole model is
    made on the way (a 3 B model would need 12 GB for one).
    """
    check_mode(mode)
    sources = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (QuantLinear, nn.Linear))
    }
    deploy(model, device, whole_model_bf16)
    rows = record_rows(model, run)
    dtype = torch.bfloat16 if whole_model_bf16 else torch.float32
    choices = choose_kernels(sources, rows, mode, dtype, cache, device)
    for name, choice in choices.items():
        if model.get_submodule(name).kernel != choice.kernel:
            set_submodule(model, name, DeployedLinear(sources[name], choice.kernel).to(device))
    sources.clear()
    release_freed_memory()
    return choices


def release_freed_memory() -> None:
    """Hand the freed source layers' pages back to the OS (glibc keeps freed heap otherwise;
    a robot's RAM sees resident memory). A no-op without glibc."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
