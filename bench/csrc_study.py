"""Benchmark: where CSRC's structured distortion is, and what compensating it does to actions.

For each weight width (uniform RTN with per-token int8 activations unless --activation-bits 16,
narrow layers kept bf16, as `daptq quantize` does), on the calibration bags:

1. the output mismatch of every Linear layer, quantized vs FP: the relative covariance error
   ||Sigma_FP - Sigma_Q||_F / ||Sigma_FP||_F and the mean error in FP standard deviations;
2. the action error: the action head's training loss on held-out batches (other episodes'
   windows, fixed noise), quantized minus FP, relative to FP;
3. CSRC (gain, shift, low-rank M, folded and re-quantized, as DA-PTQ does) on (a) the family's
   interface layers, the paper's choice, and (b) the --top layers with the largest covariance
   error among the layers the actions depend on (a nonzero loss gradient: the VLM's last MLP,
   for one, only feeds next-token logits, never the action head); the action error and the
   mismatch of the compensated layers after each.

Prints a table per width and writes OUT/csrc_study.md with OUT/csrc_mismatch.png (mismatch per
layer and width). Example (the calibration bags of scripts/results_table.sh):

    python bench/csrc_study.py --calib out/calib --family pi0 --out out/csrc_study
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import copy
import json
from pathlib import Path
from typing import Any


def main() -> None:
    """Parse the options, run every width, print and write the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calib", nargs="+", required=True, help="calibration episode bags")
    parser.add_argument("--model", help="model directory (default: the family's embedded one)")
    parser.add_argument("--family", default="pi0", choices=("pi0", "cogact"))
    parser.add_argument("--widths", nargs="+", type=int, default=[4, 3, 2], help="weight bits")
    parser.add_argument(
        "--activation-bits", type=int, default=8, choices=(8, 16), help="16: weight-only"
    )
    parser.add_argument("--top", type=int, default=4, help="layers of variant (b) (default 4)")
    parser.add_argument("--batches", type=int, default=8, help="batches, fit and held out")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=Path("out/csrc_study"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    import torch

    from daptq_ros.policy.model_dir import default_model_dir, load_model_dir
    from daptq_ros.quant.kernel_choice import cpu_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = load_model_dir(args.model or default_model_dir(args.family))
    fit, held_out = _batches(loaded, args.calib, args.batches)
    rows = [_study_width(loaded, fit, held_out, width, args) for width in args.widths]
    study = {"model": str(args.model or args.family), "cpu": cpu_model(), "widths": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "csrc_study.json").write_text(json.dumps(study, indent=2) + "\n")
    _write_markdown(study, args.out)
    print(json.dumps(study, indent=2) if args.json else _format(study))


def _batches(loaded: Any, roots: list[str], count: int) -> tuple[list, list]:
    """Batches to fit CSRC on, and held-out batches from the other half of the episodes."""
    from daptq_ros.bags import find_bag_dirs, read_episode
    from daptq_ros.policy.calibration import calibration_batches

    episodes = [read_episode(bag) for root in roots for bag in find_bag_dirs(root)]
    fit, held_out = episodes[0::2], episodes[1::2]
    tokenizer, meta = loaded.tokenizer, loaded.meta
    return (
        calibration_batches(tokenizer, meta, fit, count, 8, seed=0),
        calibration_batches(tokenizer, meta, held_out, count, 8, seed=1),
    )


def _study_width(loaded: Any, fit: list, held_out: list, width: int, args: Any) -> dict:
    """Mismatch per layer, action error, and the two CSRC variants at one weight width."""
    from daptq_ros.policy.daptq import (
        calibration_calls,
        compensate_layers,
        linear_layer_names,
        mean_loss,
    )
    from daptq_ros.policy.quantize import keep_narrow_layers
    from daptq_ros.policy.sensitivity import layer_sensitivities
    from daptq_ros.quant import QuantConfig, quantize
    from daptq_ros.quant.csrc import CSRCConfig, collect_output_stats, compensation_report

    adapter, fp = loaded.adapter, loaded.model
    activation = None if args.activation_bits == 16 else args.activation_bits
    name = f"w{width}a{args.activation_bits}"
    config = keep_narrow_layers(
        fp, QuantConfig(method="rtn", weight_bits=width, activation_bits=activation, name=name)
    )
    calls = calibration_calls(adapter, fit, seed=0)
    scoring = calibration_calls(adapter, held_out, seed=10_000)
    quantized = quantize(copy.deepcopy(fp), config, calls)
    low_bit = [n for n in linear_layer_names(fp) if config.spec_for(n).weight_bits < 16]
    csrc = CSRCConfig()
    fp_stats = collect_output_stats(fp, low_bit, calls, max_samples=csrc.max_samples)
    q_stats = collect_output_stats(quantized, low_bit, calls, max_samples=csrc.max_samples)
    mismatch = {
        layer: {
            **m["before"],
            "mean_error_in_std": _mean_error_in_std(fp_stats[layer], q_stats[layer]),
        }
        for layer, m in compensation_report(fp_stats, q_stats, q_stats).items()
    }
    fp_loss = mean_loss(scoring, fp)
    phi = layer_sensitivities(adapter, fp, fit, None, layer_names=low_bit, progress=False)
    live = [n for n in low_bit if phi[n] > 0.0]
    ranked = sorted(live, key=lambda n: -mismatch[n]["cov_rel_error"])
    variants = {"interface": adapter.interface_layers(fp), f"top{args.top}": ranked[: args.top]}
    row = {
        "config": name,
        "action_error_no_csrc": mean_loss(scoring, quantized) / fp_loss - 1.0,
        "mismatch": mismatch,
        "layers_without_action_path": [n for n in low_bit if n not in live],
        "variants": {},
    }
    for label, layers in variants.items():
        layers = [n for n in layers if n in low_bit]  # kept layers have nothing to compensate
        if not layers:
            row["variants"][label] = {"layers": [], "action_error": row["action_error_no_csrc"]}
            continue
        stats = {n: fp_stats[n] for n in layers}
        compensated, report, _ = compensate_layers(
            copy.deepcopy(fp), quantized, config, layers, calls, stats, csrc
        )
        row["variants"][label] = {
            "layers": layers,
            "action_error": mean_loss(scoring, compensated) / fp_loss - 1.0,
            "cov_rel_error": {
                n: [r["before"]["cov_rel_error"], r["after"]["cov_rel_error"]]
                for n, r in report.items()
            },
        }
    return row


def _mean_error_in_std(fp: Any, other: Any) -> float:
    """mean_c |mu_Q_c - mu_FP_c| / sigma_FP_c: the mean shift in FP standard deviations."""
    return float(((other.mean - fp.mean).abs() / fp.std.clamp_min(1e-6)).mean())


def _format(study: dict) -> str:
    """The terminal table: per width, the action error without and with each CSRC variant."""
    lines = [f"CSRC study, {study['model']} on {study['cpu']}"]
    lines.append(
        f"{'config':<8} {'no CSRC':>9} {'interface':>10} {'top-k':>9}  most distorted on the "
        "action path"
    )
    for row in study["widths"]:
        variants = list(row["variants"].values())
        live = {
            n: m for n, m in row["mismatch"].items() if n not in row["layers_without_action_path"]
        }
        worst = max(live.items(), key=lambda item: item[1]["cov_rel_error"])
        lines.append(
            f"{row['config']:<8} {100 * row['action_error_no_csrc']:>8.2f}% "
            f"{100 * variants[0]['action_error']:>9.2f}% {100 * variants[1]['action_error']:>8.2f}%"
            f"  {worst[0]} ({worst[1]['cov_rel_error']:.3f})"
        )
    lines.append("action error: held-out action-head loss, quantized / FP - 1")
    dead = study["widths"][0]["layers_without_action_path"]
    lines.append(f"{len(dead)} quantized layers have no path to the actions: {', '.join(dead)}")
    return "\n".join(lines)


def _write_markdown(study: dict, out: Path) -> None:
    """csrc_study.md and the mismatch plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    axes = figure.add_subplot()
    for row in study["widths"]:
        layers = list(row["mismatch"])
        axes.plot(
            range(len(layers)),
            [row["mismatch"][n]["cov_rel_error"] for n in layers],
            "o-",
            label=row["config"],
        )
    axes.set_yscale("log")
    axes.set_xlabel("quantized Linear layer (module order)")
    axes.set_ylabel("||Σ_FP - Σ_Q||_F / ||Σ_FP||_F")
    axes.set_title("output covariance mismatch per layer")
    axes.grid(alpha=0.3)
    axes.legend()
    FigureCanvasAgg(figure).print_png(str(out / "csrc_mismatch.png"))
    lines = [
        f"# CSRC study ({study['model']}, {study['cpu']})",
        "",
        "Generated by `bench/csrc_study.py`. Action error = held-out action-head loss, "
        "quantized / FP - 1 (fixed noise). Covariance error = ||Σ_FP - Σ_Q||_F / ||Σ_FP||_F of "
        "the layer's output on the calibration batches.",
        "",
        "| config | no CSRC | CSRC on interface layers | CSRC on top layers | top layers "
        "(cov. error before -> after) |",
        "|---|---|---|---|---|",
    ]
    for row in study["widths"]:
        interface, top = row["variants"].values()
        tops = ", ".join(
            f"{n} ({a:.3f} -> {b:.3f})" for n, (a, b) in top.get("cov_rel_error", {}).items()
        )
        lines.append(
            f"| {row['config']} | {100 * row['action_error_no_csrc']:+.2f} % | "
            f"{100 * interface['action_error']:+.2f} % | {100 * top['action_error']:+.2f} % | "
            f"{tops} |"
        )
    dead = study["widths"][0]["layers_without_action_path"]
    lines += [
        "",
        f"Layers without a path to the actions (zero loss gradient; their mismatch cannot move "
        f"an action): {', '.join(f'`{n}`' for n in dead) or 'none'}.",
        "",
        "![covariance mismatch per layer](csrc_mismatch.png)",
        "",
    ]
    (out / "csrc_study.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
