"""Run DA-PTQ's exact integer weights in ONNX Runtime and OpenVINO, and check them (issue 36).

Layers are quantized with daptq_ros's own quantizer (preset w4a8 plus overrides: W4 asym g128,
W3 asym g64, W8 sym per channel), a diagonal CSRC is folded in, and the model goes through
save_quantized / load_quantized. The codes, scales, zero points and bias read back are then
expressed, with no re-quantization by any runtime tool, as

- ONNX Runtime: one com.microsoft::MatMulNBits node per layer (2/3/4-bit in the 4-bit container,
  zero points packed as uint8), accuracy_level 0 (float activations) and 4 (int8 activations);
- OpenVINO: Constant(u4/u8) -> Convert -> Subtract(zp) -> Multiply(scale) -> [Reshape] -> MatMul
  -> Add(bias), compiled with INFERENCE_PRECISION_HINT f32 and DYNAMIC_QUANTIZATION_GROUP_SIZE 0
  (float activations) or 128 (int8 activations).

Checks: (a) float activations equal the dequantized-weight matmul (max |y - ref| / max |ref|,
target 1e-5); (b) the weights stay low-bit (ORT initializer bytes == our bytes; OpenVINO's compiled
graph keeps u4/u8 constants feeding one FullyConnected); (c) int8 activations against our
simulated per-token scheme (max|x| / 127.5) and against symmetric /127 per (row, block) schemes.
Then latency of an 8 x Linear(2048, 2048) stack against torch FP32 and BF16, one thread.

Run: OMP_NUM_THREADS=1 python bench/runtime_exact_weights.py [--json] [--runs N] [--rows 1 9 64 256]
Needs onnx, onnxruntime and openvino beside torch (not in requirements.txt). The layers and
their graphs are built by bench/runtime_graphs.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch
from torch import nn

from daptq_ros.quant.formats import fake_quantize_activation_per_token
from runtime_graphs import (  # bench/ is on sys.path when run as a script
    WIDTH,
    ExactLayer,
    make_config,
    ort_bytes_check,
    ort_container,
    ort_model,
    ort_session,
    ov_compile,
    ov_model,
    ov_runtime_check,
    quantize_round_trip,
)

STACK_DEPTH = 8
TARGET_REL_ERR = 1e-5
OV_DQ_GROUP = 128

# --------------------------------------------------------------------------- references


def quantize_rows_blocks(x: np.ndarray, block: int, divisor: float) -> np.ndarray:
    """Symmetric int8 quantize-dequantize per (row, block): s = max|x| / divisor, RNE, x * (1/s)."""
    m, k = x.shape
    xb = x.astype(np.float32).reshape(m, k // block, block)
    scale = np.abs(xb).max(axis=-1, keepdims=True) / np.float32(divisor)
    inv = np.where(scale > 0, np.float32(1.0) / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    q = np.clip(np.rint(xb * inv), -128, 127)
    return (q * scale).reshape(m, k)


def activation_schemes(x: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate int8 activation schemes: ours (per token /127.5) and symmetric /127 blocks."""
    k = x.shape[1]
    ours = fake_quantize_activation_per_token(torch.from_numpy(x)).numpy()
    schemes = {"token/127.5 (daptq)": ours, f"row/127 (block {k})": quantize_rows_blocks(x, k, 127)}
    for block in (32, 64, 128, 256):
        schemes[f"block{block}/127"] = quantize_rows_blocks(x, block, 127)
    return schemes


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref|."""
    return float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())


def linear64(x: np.ndarray, layer: ExactLayer, w64: np.ndarray) -> np.ndarray:
    """x @ W^T + b in float64."""
    y = x.astype(np.float64) @ w64.T
    return y + layer.bias.astype(np.float64) if layer.bias is not None else y


# --------------------------------------------------------------------------- checks


def accuracy_checks(layers: list[ExactLayer], rows: list[int], seed: int) -> list[dict]:
    """Checks (a), (b), (c) per layer, each runtime variant, max over `rows`."""
    core = ov.Core()
    rng = np.random.default_rng(seed)
    xs = {m: rng.standard_normal((m, WIDTH)).astype(np.float32) for m in rows}
    results = []
    for layer in layers:
        w64 = layer.weight64()
        refs = {m: linear64(x, layer, w64) for m, x in xs.items()}
        sch_refs = {
            m: {name: linear64(xq, layer, w64) for name, xq in activation_schemes(x).items()}
            for m, x in xs.items()
        }
        c = ort_container(layer)
        runners: dict[str, tuple[Callable[[np.ndarray], np.ndarray], bool, str]] = {}
        for level in (0, 4):
            model = ort_model([layer], level)
            sess = ort_session(model)
            runners[f"ORT MatMulNBits acc{level}"] = (
                lambda x, s=sess: s.run(None, {"x": x})[0],
                level == 4,
                f"block{c['block']}/127",
            )
        ort_bytes = ort_bytes_check(layer, ort_model([layer], 0))
        ov_checks = {}
        model_ov = ov_model([layer])
        grouped = layer.scale.shape[1] > 1
        dq_groups = [0, OV_DQ_GROUP]
        if grouped and layer.fmt.group_size < OV_DQ_GROUP:
            dq_groups.append(layer.fmt.group_size)  # dq 128 does not apply to g64 weights
        for dq in dq_groups:
            compiled = ov_compile(core, model_ov, dq)
            request = compiled.create_infer_request()
            runners[f"OpenVINO dq{dq}"] = (
                lambda x, r=request: r.infer({0: x})[0].copy(),
                dq > 0,
                f"block{dq}/127",
            )
            for x in xs.values():  # run once at each M so the runtime graph is final
                request.infer({0: x})
            ov_checks[f"dq{dq}"] = ov_runtime_check(compiled)
        for variant, (run, int8_acts, expected) in runners.items():
            outs = {m: run(x) for m, x in xs.items()}
            entry = {"layer": layer.name, "format": layer.fmt.describe(), "variant": variant}
            entry["err_vs_float_ref"] = max(rel_err(outs[m], refs[m]) for m in rows)
            if int8_acts:
                errs = {
                    name: max(rel_err(outs[m], sch_refs[m][name]) for m in rows)
                    for name in sch_refs[rows[0]]
                }
                best = min(errs, key=errs.get)
                if entry["err_vs_float_ref"] <= TARGET_REL_ERR:
                    best = "none: float activations"
                    errs[best] = entry["err_vs_float_ref"]
                entry.update(
                    err_vs_schemes=errs,
                    err_vs_daptq=errs["token/127.5 (daptq)"],
                    expected_scheme=expected,
                    err_vs_expected=errs.get(expected, float("nan")),
                    best_scheme=best,
                    err_vs_best=errs[best],
                )
            else:
                entry["pass_a"] = entry["err_vs_float_ref"] <= TARGET_REL_ERR
            if variant.startswith("ORT"):
                entry["low_bit"] = ort_bytes
                entry["pass_b"] = bool(
                    ort_bytes["B_equals_file_codes"]
                    and ort_bytes["zp_equals_packed_zero"]
                    and ort_bytes["scales_equal_file"]
                )
            else:
                check = ov_checks[variant.split()[-1]]
                want = "u4" if layer.fmt.bits <= 4 else "u8"
                fcs = check["fully_connected"]
                entry["low_bit"] = check
                entry["pass_b"] = bool(
                    len(fcs) == 1
                    and fcs[0]["input_precisions"].count(want) == 2  # codes and zero point
                    and "Convert" not in check["layer_types"]
                )
            results.append(entry)
    return results


# --------------------------------------------------------------------------- latency


def latency(stacks: dict[str, list[ExactLayer]], rows: list[int], runs: int, seed: int) -> dict:
    """Median ms per call of every variant at every M (round-robin across variants)."""
    core = ov.Core()
    runners: dict[str, Callable[[int], Callable[[], object]]] = {}
    rng = np.random.default_rng(seed)
    xs = {m: rng.standard_normal((m, WIDTH)).astype(np.float32) for m in rows}

    for label, stack in stacks.items():
        for level in (0, 4):
            sess = ort_session(ort_model(stack, level))
            runners[f"ORT {label} acc{level}"] = lambda m, s=sess: lambda: s.run(None, {"x": xs[m]})
        model = ov_model(stack)
        for dq in (0, OV_DQ_GROUP):
            request = ov_compile(core, model, dq).create_infer_request()
            runners[f"OpenVINO {label} dq{dq}"] = lambda m, r=request: lambda: r.infer({0: xs[m]})
        del model

    w4 = next(iter(stacks.values()))
    fp32 = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in w4)).eval()
    with torch.no_grad():
        for lin, layer in zip(fp32, w4, strict=True):
            lin.weight.copy_(torch.from_numpy(layer.weight64().astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(layer.bias))
    bf16 = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in w4)).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    txs = {m: torch.from_numpy(x) for m, x in xs.items()}
    bxs = {m: x.to(torch.bfloat16) for m, x in txs.items()}

    def torch_run(model: nn.Module, inputs: dict) -> Callable[[int], Callable[[], object]]:
        def make(m: int) -> Callable[[], object]:
            def call() -> object:
                with torch.inference_mode():
                    return model(inputs[m])

            return call

        return make

    runners = {"torch FP32": torch_run(fp32, txs), "torch BF16": torch_run(bf16, bxs), **runners}
    ms: dict[str, dict[int, float]] = {name: {} for name in runners}
    for m in rows:
        calls = {name: make(m) for name, make in runners.items()}
        for call in calls.values():  # warm-up (OpenVINO reshapes, ORT allocates)
            call()
            call()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(runs):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1e3)
        for name in calls:
            ms[name][m] = statistics.median(samples[name])
    return {"ms": ms}


# --------------------------------------------------------------------------- report


def cpu_description() -> str:
    """lscpu's model name plus the matmul-relevant ISA flags."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown").strip()
    flags = set(fields.get("Flags", "").split())
    isa = [
        f
        for f in (
            "avx2",
            "avx512f",
            "avx_vnni",
            "avx512_vnni",
            "avx512_bf16",
            "amx_int8",
            "amx_bf16",
        )
        if f in flags
    ]
    return f"{name} ({fields.get('CPU(s)', '?').strip()} CPUs; {' '.join(isa)})"


def versions() -> dict[str, str]:
    """Versions of the libraries involved."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "openvino": ov.__version__.split("-")[0],
    }


def print_report(report: dict) -> None:
    """The short human-readable table."""
    print(f"CPU: {report['cpu']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"threads: torch {report['threads']}, ORT/OpenVINO 1; rows M = {report['rows']}")
    print()
    print("Accuracy (max |y - ref| / max |ref| over all M; ref = float64 x @ dequant(W)^T + b)")
    head = f"{'layer':<16}{'runtime':<24}{'(a) float':>11}{'(b) low-bit':>13}"
    head += f"{'(c) vs daptq':>14}{'vs expected':>26}{'best-matching scheme':>36}"
    print(head)
    for r in report["accuracy"]:
        a = f"{r['err_vs_float_ref']:.1e}"
        b = "yes" if r["pass_b"] else "NO"
        if "err_vs_daptq" in r:
            c = f"{r['err_vs_daptq']:.1e}"
            exp = f"{r['expected_scheme']} {r['err_vs_expected']:.1e}"
            best = f"{r['best_scheme']} {r['err_vs_best']:.1e}"
        else:
            a += " ok" if r["pass_a"] else " FAIL"
            c, exp, best = "-", "-", "-"
        print(f"{r['format']:<16}{r['variant']:<24}{a:>11}{b:>13}{c:>14}{exp:>26}{best:>36}")
    print()
    ortb = next(r["low_bit"] for r in report["accuracy"] if r["variant"].startswith("ORT"))
    print(
        f"ORT W4 g128 layer: B {ortb['B_dtype']} {ortb['B_bytes']} bytes == file codes: "
        f"{ortb['B_equals_file_codes']}; zp {ortb['zp_bytes']} bytes; fp32 weight would be "
        f"{ortb['fp32_weight_bytes']} bytes"
    )
    ovb = next(r["low_bit"] for r in report["accuracy"] if r["variant"] == "OpenVINO dq128")
    fc = ovb["fully_connected"][0]
    print(
        f"OpenVINO W4 g128 layer (dq128): layers {ovb['layer_types']}; FC inputs "
        f"{fc['input_precisions']}, runtimePrecision {fc['runtimePrecision']}, "
        f"primitive {fc['primitiveType']}"
    )
    if not report.get("latency"):
        return
    lat = report["latency"]
    rows = report["rows"]
    print()
    print(
        f"Latency, {STACK_DEPTH} x Linear({WIDTH}, {WIDTH}), median of {report['runs']} "
        "(one thread; runtime rows: x torch FP32 / x torch BF16, lower is faster)"
    )
    print(f"{'variant':<28}" + "".join(f"{'M=' + str(m):>15}" for m in rows))
    for name, per_m in lat["ms"].items():
        if name.startswith("torch"):
            cells = [f"{per_m[m]:.2f} ms" for m in rows]
        else:
            fp32, bf16 = lat["ms"]["torch FP32"], lat["ms"]["torch BF16"]
            cells = [f"{per_m[m] / fp32[m]:.2f}/{per_m[m] / bf16[m]:.2f}" for m in rows]
        print(f"{name:<28}" + "".join(f"{c:>15}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check DA-PTQ's exact low-bit weights in ONNX Runtime (MatMulNBits) and "
        "OpenVINO (u4/u8 decompression), and time an 8-layer stack against torch."
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 9, 64, 256], help="M values")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per variant and M")
    parser.add_argument("--no-latency", action="store_true", help="accuracy checks only")
    parser.add_argument("--seed", type=int, default=0, help="weights and inputs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    layer_formats = {
        "w4": {},  # the preset: W4 asym g128 (A8)
        "w3": {"weight_bits": 3, "group_size": 64},
        "w8": {"weight_bits": 8, "symmetric": True, "granularity": "channel"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = make_config(layer_formats)
        layers = quantize_round_trip(list(layer_formats), config, folder, args.seed)
        report: dict = {
            "cpu": cpu_description(),
            "versions": versions(),
            "threads": torch.get_num_threads(),
            "rows": args.rows,
            "runs": args.runs,
            "accuracy": accuracy_checks(layers, args.rows, args.seed),
        }
        if not args.no_latency:
            names = [f"l{i}" for i in range(STACK_DEPTH)]
            stacks = {
                "W4 g128": quantize_round_trip(names, make_config({}), folder, args.seed + 1),
                "W8 ch": quantize_round_trip(
                    names,
                    make_config({n: layer_formats["w8"] for n in names}),
                    folder,
                    args.seed + 2,
                ),
            }
            report["latency"] = latency(stacks, args.rows, args.runs, args.seed)
    ok = all(r.get("pass_a", True) and r["pass_b"] for r in report["accuracy"])
    report["pass_a_and_b"] = ok
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print_report(report)
        print()
        print(f"(a) and (b): {'PASS' if ok else 'FAIL'} (target max rel err <= {TARGET_REL_ERR:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
