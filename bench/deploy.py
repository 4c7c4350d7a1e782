"""Benchmark: deployed latency and memory of a VLA at deployment scale, per quantization variant.

Builds the pi0 family at a realistic size with random weights (no weights can be downloaded;
accuracy is not measured, only speed and memory), deploys it per variant on the real kernels
(`daptq_ros.quant.deploy`) and measures, each variant in its own process so that peak memory is
its own: weight bytes, peak resident memory, build + quantize time, and the latency of one
action chunk (prefix encoding + every flow step, batch 1; p50 / p95 after warm-up), each also
as a ratio to FP32 and to BF16 of the same run. The DA-PTQ variant's bit map comes from the
budgeted allocator (4.5 average bits) with a synthetic sensitivity profile: action-expert and
interface layers weigh 4x the backbone's (the trained default's profile cannot be mapped onto a
model of another depth and width).

    python bench/deploy.py --size smolvla --runs 10 --threads 2
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("fp32", "bf16", "w8a16", "w8a8", "w4a16", "daptq_budget")
SENSITIVE_WEIGHT = 4.0  # synthetic phi of action-expert and interface layers (backbone: 1)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="smolvla", help="pi0 size preset (smolvla, pi0, ...)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--runs", type=int, default=10, help="timed chunks per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", default=None, help="also write the table as markdown here")
    return parser.parse_args()


def build(size: str):
    """(adapter, model, batch) of the pi0 family at `size`, random weights, batch 1."""
    from daptq_ros.policy.families import Batch, get_family

    adapter = get_family("pi0")
    config = adapter.default_config(
        size=size,
        vocab_size=512,
        max_text_length=16,
        state_dim=4,
        action_dim=4,
        horizon=8,
        image_size=(96, 192),
        num_views=2,
    )
    torch.manual_seed(0)
    model = adapter.build(config).eval()
    batch = Batch(
        images=torch.rand(1, 3, 96, 192),
        input_ids=torch.randint(1, 512, (1, 12)),
        attention_mask=torch.ones(1, 12, dtype=torch.int64),
        state=torch.zeros(1, 4),
    )
    return adapter, model, batch


def quantized(adapter, model, variant: str):
    """The model deployed as `variant` (fp32: untouched)."""
    from daptq_ros.policy.daptq import linear_layer_names, narrow_layers
    from daptq_ros.policy.quantize import keep_narrow_layers
    from daptq_ros.quant import QuantConfig, load_config, quantize
    from daptq_ros.quant.allocation import allocate_budget, bit_map_config, weight_error_table

    if variant == "fp32":
        return model
    if variant != "daptq_budget":
        config = keep_narrow_layers(model, load_config(variant))
        return quantize(model, config, deployed=True)
    names = linear_layer_names(model)
    sensitive = set(adapter.action_head_layers(model)) | set(adapter.interface_layers(model))
    phi = {n: SENSITIVE_WEIGHT if n in sensitive else 1.0 for n in names}
    costs = weight_error_table(model, names)
    bit_map = allocate_budget(phi, costs, 4.5, never=narrow_layers(model, 128))
    base = QuantConfig(method="rtn", weight_bits=4, activation_bits=8, name="daptq_budget")
    return quantize(model, bit_map_config(base, bit_map, "daptq_budget", model), deployed=True)


def measure(variant: str, args: argparse.Namespace) -> dict:
    """One variant in this process: bytes, peak memory, build time, chunk latency."""
    from daptq_ros.quant import weight_bytes

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    adapter, model, batch = build(args.size)
    model = quantized(adapter, model, variant)
    ready_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        adapter.sample(model, batch, None, generator)  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            adapter.sample(model, batch, None, generator)
            times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {
        "variant": variant,
        "weight_mb": weight_bytes(model) / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "build_and_quantize_s": ready_s,
        "chunk_ms_p50": statistics.median(times),
        "chunk_ms_p95": times[min(len(times) - 1, int(0.95 * len(times)))],
    }


def main() -> None:
    """Each variant in a child process, then the table with ratios to FP32 and BF16."""
    args = parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args)))
        return
    results = {}
    for variant in args.variants:
        command = [sys.executable, __file__, "--variant", variant, "--size", args.size]
        command += ["--runs", str(args.runs), "--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    for row in results.values():
        for ref in ("fp32", "bf16"):
            if ref in results:
                row[f"x_{ref}"] = row["chunk_ms_p50"] / results[ref]["chunk_ms_p50"]
                row[f"bytes_x_{ref}"] = row["weight_mb"] / results[ref]["weight_mb"]
    if args.json:
        print(json.dumps(results, indent=2))
    table = markdown(results, args)
    if not args.json:
        print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def markdown(results: dict, args: argparse.Namespace) -> str:
    """The results as a markdown section naming the machine, threads and versions."""
    import platform

    import torchao
    import transformers

    lines = [
        "# Deployment performance (generated by bench/deploy.py)",
        "",
        f"## pi0 family, size `{args.size}`, batch 1, {args.threads} threads, {args.runs} runs",
        "",
        f"Machine: {cpu_name() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, torchao {torchao.__version__}, transformers "
        f"{transformers.__version__}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. "
        f"Command: `python bench/deploy.py --size {args.size} --runs {args.runs} "
        f"--threads {args.threads}`.",
        "",
        "| variant | weights MB | x FP32 bytes | peak RSS MB | build+quantize s | chunk p50 ms "
        "| chunk p95 ms | x FP32 | x BF16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['variant']} | {r['weight_mb']:.1f} | {r.get('bytes_x_fp32', float('nan')):.3f} "
            f"| {r['peak_rss_mb']:.0f} | {r['build_and_quantize_s']:.1f} "
            f"| {r['chunk_ms_p50']:.1f} | {r['chunk_ms_p95']:.1f} "
            f"| {r.get('x_fp32', float('nan')):.2f} | {r.get('x_bf16', float('nan')):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
