"""`daptq quant-demo`: quantize a small transformers Llama with every method and compare.

The model is a real transformers architecture (LlamaForCausalLM, the language-model half of
the cogact family) at a tiny, seeded random initialisation: no weights can be downloaded here.
For each preset it reports the output error against FP32 on held-out tokens, the weight bytes
and the deployed latency, then saves one quantized model as safetensors and reloads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_PRESETS = ("bf16", "w8a8", "smoothquant_w8a8", "w4a16", "awq_w4", "gptq_w4", "w4a8")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq quant-demo`."""
    parser = subparsers.add_parser(
        "quant-demo",
        help="quantize a small transformers Llama with every method and compare to FP32",
        description="Short end-to-end quantization demo on a seeded, randomly initialised "
        "transformers LlamaForCausalLM: output error vs FP32, weight bytes, deployed latency, "
        "and a safetensors save/load round trip.",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=list(DEFAULT_PRESETS),
        help="bit-config presets or YAML files to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--config", help="a single bit-config YAML file to try instead of --presets"
    )
    parser.add_argument("--hidden", type=int, default=256, help="hidden width (default: 256)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (default: 4)")
    parser.add_argument(
        "--calib-batches", type=int, default=8, help="calibration batches (default: 8)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for weights and tokens (default: 0)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default: 2)"
    )
    parser.add_argument(
        "--out", default="out/quant_demo", help="folder for report.md, report.json and the model"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table (or JSON)."""
    import torch

    from daptq_ros.evidence.quant_demo import format_report, run_demo

    torch.set_num_threads(args.threads)
    presets = [args.config] if args.config else list(args.presets)
    report = run_demo(
        presets, args.hidden, args.layers, args.calib_batches, args.seed, Path(args.out)
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
