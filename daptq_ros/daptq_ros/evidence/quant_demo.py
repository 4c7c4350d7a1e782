"""The quantization demo behind `daptq quant-demo` (see that command's docstring)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from daptq_ros.evidence.kernel_bench import median_latency_ms
from daptq_ros.quant.api import quantize
from daptq_ros.quant.config import load_config
from daptq_ros.quant.deploy import deploy, weight_bytes
from daptq_ros.quant.serialization import load_quantized, save_quantized

VOCAB, SEQ, BATCH = 1024, 64, 4


def tiny_llama(hidden: int, layers: int, seed: int) -> nn.Module:
    """A seeded, randomly initialised transformers LlamaForCausalLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=SEQ,
    )
    return LlamaForCausalLM(config).eval()


class LogitsOnly(nn.Module):
    """Wrap a causal LM so calling it with token ids returns the logits tensor."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def run_demo(
    presets: list[str], hidden: int, layers: int, calib_batches: int, seed: int, out: Path
) -> dict:
    """Quantize one seeded model by every preset; errors are relative to its FP32 logits."""
    generator = torch.Generator().manual_seed(seed + 1)
    calibration = [
        torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator) for _ in range(calib_batches)
    ]
    held_out = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    fp32 = LogitsOnly(tiny_llama(hidden, layers, seed))
    with torch.inference_mode():
        reference = fp32(held_out)
    fp32_ms = median_latency_ms(lambda: fp32(held_out), warmup=2, repeats=10)
    rows = [_row("fp32", "FP32", reference, reference, weight_bytes(fp32), fp32_ms, fp32_ms)]
    saved = None
    for preset in presets:
        config = load_config(preset)
        simulated = quantize(copy.deepcopy(fp32), config, calibration)
        with torch.inference_mode():
            logits = simulated(held_out)
        deployed = deploy(copy.deepcopy(simulated)) if config.weight_bits != 32 else simulated
        ms = median_latency_ms(lambda d=deployed: d(held_out), warmup=2, repeats=10)
        rows.append(
            _row(
                preset,
                config.default_spec().describe(),
                logits,
                reference,
                weight_bytes(deployed),
                ms,
                fp32_ms,
            )
        )
        if saved is None and config.weight_bits <= 8:
            saved = _round_trip(simulated, config, held_out, logits, hidden, layers, seed, out)
    report = {
        "model": f"LlamaForCausalLM hidden={hidden} layers={layers} (seeded random init)",
        "threads": torch.get_num_threads(),
        "rows": rows,
        "round_trip": saved,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(format_report(report) + "\n")
    return report


def _row(preset: str, fmt: str, logits, reference, n_bytes: int, ms: float, fp32_ms: float) -> dict:
    mse = (logits.float() - reference).pow(2).mean().item()
    rel = ((logits.float() - reference).norm() / reference.norm()).item()
    return {
        "preset": preset,
        "format": fmt,
        "logits_mse": mse,
        "logits_rel_error": rel,
        "weight_bytes": n_bytes,
        "deployed_ms": ms,
        "latency_vs_fp32": ms / fp32_ms,
    }


def _round_trip(simulated, config, held_out, logits, hidden, layers, seed, out: Path) -> dict:
    """Save the quantized model, load it into a fresh architecture, compare outputs."""
    path = save_quantized(simulated, out / f"{config.name}.safetensors", config)
    loaded, _ = load_quantized(LogitsOnly(tiny_llama(hidden, layers, seed + 99)), path)
    with torch.inference_mode():
        max_diff = (loaded(held_out) - logits).abs().max().item()
    return {
        "preset": config.name,
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "max_abs_diff_after_reload": max_diff,
    }


def format_report(report: dict) -> str:
    """A readable table of a run_demo report."""
    lines = [
        f"# Quantization demo: {report['model']}, {report['threads']} threads",
        "",
        "| preset | format | logits rel. error | weight MB | deployed ms | x FP32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['preset']} | {r['format']} | {r['logits_rel_error']:.4f} | "
            f"{r['weight_bytes'] / 1e6:.2f} | {r['deployed_ms']:.1f} | {r['latency_vs_fp32']:.2f} |"
        )
    rt = report["round_trip"]
    if rt:
        lines += [
            "",
            f"Saved {rt['preset']} to {rt['path']} ({rt['file_bytes'] / 1e6:.2f} MB) and "
            "reloaded it into a fresh model: max |logit difference| = "
            f"{rt['max_abs_diff_after_reload']:.2e}.",
        ]
    return "\n".join(lines)
