"""`daptq quantize`: post-training quantization of a model directory, calibrated on episode bags."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

METHODS = ("rtn", "smoothquant", "awq", "gptq", "qvla", "daptq")
SCORES = ("virtual", "jacobian", "none")
SIM_ARM = "sawyer_sim"  # --urdf value for the simulator's Sawyer (MuJoCo kinematics)
CSRC_COLUMNS = ("cov_rel_error", "mean_abs_error", "std_ratio_mean")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `daptq quantize`."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a model directory (RTN, SmoothQuant, AWQ, GPTQ, QVLA-style, DA-PTQ)",
        description="Read calibration episodes from rosbag2 files (simulated or real robot), "
        "stratify them into spatial bins by the dominant translation axis, quantize the model "
        "with the chosen method and write a quantized model directory (packed weights, bit map, "
        "folded compensation: loading it needs no calibration) with a calibration report "
        "(report.md, calibration.json, sensitivities.png, bits.yaml).",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="model directory (default: the embedded default pi0 model)",
    )
    parser.add_argument(
        "--calib",
        nargs="+",
        required=True,
        metavar="BAGS",
        help="episode bags (daptq collect / eval), or for a joint-space model your own `ros2 "
        "bag record` recordings of the arm (a camera and /joint_states), or folders searched "
        "recursively for them",
    )
    parser.add_argument(
        "--image-topic",
        default="/camera/image_raw",
        help="the camera topic of plain recordings (default: %(default)s)",
    )
    parser.add_argument(
        "--instruction",
        default=None,
        help="the task's instruction, for plain recordings without /instruction",
    )
    parser.add_argument("--method", required=True, choices=METHODS, help="quantization method")
    parser.add_argument(
        "--config",
        default="w4a8",
        metavar="BITS",
        help="bit config (preset name or YAML): the formats for rtn/smoothquant/"
        "awq/gptq; for daptq and qvla the low weight bits, activation bits and "
        "group size (default: w4a8)",
    )
    parser.add_argument(
        "--allocation",
        default="topk",
        choices=("topk", "budget", "uniform"),
        help="daptq: top-k (paper), budgeted knapsack, or uniform (the CSRC-only "
        "ablation) (default: topk)",
    )
    parser.add_argument(
        "--keep-fraction",
        type=float,
        default=0.3,
        help="daptq top-k: fraction of layers kept in bf16 (default: 0.3)",
    )
    parser.add_argument(
        "--average-bits",
        type=float,
        default=4.5,
        help="daptq budget / qvla: average weight bits (default: 4.5)",
    )
    parser.add_argument(
        "--no-csrc",
        action="store_true",
        help="daptq: skip CSRC (the allocation-only ablation)",
    )
    parser.add_argument(
        "--csrc-layers",
        default="interface",
        choices=["interface", "action-path"],
        help="daptq: where CSRC compensates: the interface layers (the paper) or the most "
        "distorted layers of <= 3 bits the actions depend on, kept only if it lowers the "
        "calibration action loss (ours; docs/quantization.md, 'Where CSRC acts') "
        "(default: interface)",
    )
    parser.add_argument(
        "--csrc-fold",
        default="requantize",
        choices=["requantize", "scales"],
        help="daptq: how CSRC is folded: gain, shift and low-rank M into the full-precision "
        "weights, then re-quantized (the paper), or gain and shift alone into the quantized "
        "layers' scales and biases, exact at any bit width (ours) (default: requantize)",
    )
    parser.add_argument(
        "--rounding",
        default="rtn",
        choices=["rtn", "gptq"],
        help="daptq: how the low-bit layers of the bit map are rounded: round-to-nearest (the "
        "paper) or GPTQ's Hessian error feedback on the calibration inputs (default: rtn)",
    )
    parser.add_argument(
        "--scores",
        default="virtual",
        choices=SCORES,
        help="daptq drift scores s_j: the paper's virtual planar chain, the real "
        "arm Jacobian (needs --urdf) or none (default: virtual)",
    )
    parser.add_argument(
        "--urdf",
        default=None,
        metavar="ARM_OR_FILE",
        help="arm for --scores jacobian: panda, ur5, so101, xarm7, a URDF file, or sawyer_sim "
        "(the simulator's arm, from its MuJoCo model)",
    )
    parser.add_argument("--ee-frame", default=None, help="tool frame of a --urdf file")
    parser.add_argument(
        "--bins",
        type=int,
        default=6,
        help="spatial bins of the calibration set (default: 6, the paper's)",
    )
    parser.add_argument(
        "--episodes-per-bin",
        type=int,
        default=None,
        help="episodes drawn per bin (default: all, balanced down to the rarest)",
    )
    parser.add_argument("--batches", type=int, default=8, help="calibration batches R (default: 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="calibration seed (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--out", required=True, metavar="QDIR", help="quantized model directory to write"
    )
    parser.add_argument(
        "--runtime",
        choices=("torch", "openvino"),
        default="torch",
        help="openvino: also export the quantized model for the OpenVINO runtime (pi0; its "
        "exact integer weights, into QDIR/openvino); run it with `--runtime openvino` "
        "(default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the whole calibration report (per-layer statistics) instead of its summary",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the calibration bags, read them, quantize, save and report."""
    import torch

    from daptq_ros.policy.model_dir import default_model_dir, load_model_dir
    from daptq_ros.quant import load_config
    from daptq_ros.quant.kernel_fit import check_deployable

    torch.set_num_threads(args.threads)
    check_deployable(load_config(args.config))  # a model no kernel runs is refused first
    model_dir = Path(args.model) if args.model else default_model_dir("pi0")
    loaded = load_model_dir(model_dir)
    if args.runtime == "openvino":
        from daptq_ros.policy.openvino_export import check_exportable

        check_exportable(loaded.meta.family, load_config(args.config).activation_bits)
    bags = _checked_bags(args.calib, args.bins, loaded.meta, args.image_topic)
    episodes, batches, bins = _calibration(loaded, bags, args)
    start = time.perf_counter()
    summary = _quantize(loaded, episodes, batches, args)
    summary["timings"]["total_s"] = time.perf_counter() - start
    summary.update(
        model=str(model_dir),
        calibration_bags=len(bags),
        calibration_episodes=len(episodes),
        bins=bins,
        method=args.method,
    )
    if args.runtime == "openvino":
        summary["openvino"] = _export_openvino(loaded, Path(args.out))
    _save(loaded, summary, Path(args.out))
    if args.json:
        print(json.dumps(_public(summary), indent=2))
    elif args.verbose:
        print(_markdown(summary))
        print(f"\nwrote {args.out}")
    else:
        print(_overview(summary, Path(args.out)))
    return 0


def _checked_bags(roots: list[str], bins: int, meta: Any, image_topic: str) -> list[Path]:
    """Every calibration bag, after the cheap checks (topics, count) that precede heavy work.

    Episode bags serve every model; a joint-space model also calibrates on plain recordings
    of the arm (a camera and /joint_states, bags.recording).
    """
    from daptq_ros.bags import bag_info, find_bag_dirs
    from daptq_ros.bags.episode import TOPICS
    from daptq_ros.bags.recording import JOINT_ACTION_SPACES, JOINTS_TOPIC
    from daptq_ros.errors import BagError

    bags = [bag for root in roots for bag in find_bag_dirs(root)]
    if len(bags) < bins:
        raise BagError(
            f"the calibration set has {len(bags)} bags, fewer than one per bin "
            f"({bins} bins); record more episodes (daptq collect) or lower --bins"
        )
    joint_space = meta.action_space in JOINT_ACTION_SPACES
    for bag in bags:
        topics = {t.name for t in bag_info(bag).topics}
        if not (missing := sorted(set(TOPICS) - topics)):
            continue
        if joint_space and {image_topic, JOINTS_TOPIC} <= topics:
            continue  # a plain recording of the arm
        plain = f", or a recording of {image_topic} and {JOINTS_TOPIC}" if joint_space else ""
        raise BagError(
            f"{bag}: calibration bags need the episode topics; {', '.join(missing)} "
            f"missing (record with daptq collect / daptq eval, or record those topics{plain})"
        )
    return bags


def _calibration(
    loaded: Any, bags: list[Path], args: argparse.Namespace
) -> tuple[list, list, dict[str, int]]:
    """Read, stratify and batch the calibration episodes; also the episodes per bin."""
    from tqdm import tqdm

    from daptq_ros.bags.recording import read_demonstration
    from daptq_ros.policy.calibration import (
        bin_counts,
        calibration_batches,
        check_calibration_set,
        stratify,
    )

    meta = loaded.meta
    read = [
        read_demonstration(
            bag,
            meta.state_spec,  # the states as the model takes them
            meta.action_space,
            meta.action_names,
            meta.dt,
            image_topic=args.image_topic,
            instruction=args.instruction,
        )
        for bag in tqdm(bags, desc="read calibration bags", unit="bag")
    ]
    for episode in read:
        _check_actions(episode, meta)
    episodes = [_with_tool_path(e, args) for e in read]
    counts = bin_counts(check_calibration_set(episodes, args.bins), args.bins)
    chosen = stratify(episodes, args.bins, args.episodes_per_bin, args.seed)
    batches = calibration_batches(
        loaded.tokenizer, meta, chosen, args.batches, args.batch_size, args.seed
    )
    return chosen, batches, counts


def _check_actions(episode: Any, meta: Any) -> None:
    """An episode bag's recorded actions are the model's (space and names), else BagError."""
    from daptq_ros.errors import BagError

    recorded = (getattr(episode, "action_space", None), getattr(episode, "action_names", None))
    if recorded[0] is None:  # a plain recording: its actions are built for the model
        return
    if recorded != (meta.action_space, tuple(meta.action_names)):
        raise BagError(
            f"{episode.path}: records {recorded[0]} actions ({', '.join(recorded[1])}), the "
            f"model takes {meta.action_space} ({', '.join(meta.action_names)}); calibrate on "
            f"episodes of this model's actions (daptq collect --control {meta.action_space})"
        )


def _with_tool_path(episode: Any, args: argparse.Namespace) -> Any:
    """A recording without /ee_pose gets its tool path from --urdf (it decides the bin)."""
    import numpy as np

    from daptq_ros.errors import BagError

    if episode.ee_positions is not None:
        return episode
    if args.urdf is None or args.urdf == SIM_ARM:
        if args.bins == 1:  # no stratification: any path will do
            return replace(episode, ee_positions=np.zeros((len(episode.stamps), 3)))
        raise BagError(
            f"{episode.path}: no /ee_pose, so its motion direction (its calibration bin) is "
            "unknown; pass the arm's --urdf (and --ee-frame) to compute it, record /ee_pose, "
            "or use --bins 1"
        )
    from daptq_ros.drift.analysis import load_kinematics

    kinematics = load_kinematics(args.urdf, args.ee_frame)
    q = kinematics.q_from_joint_state(episode.joint_names, episode.joint_positions)
    return replace(episode, ee_positions=kinematics.fk_batch(q)[0])


def _drift_scores(episodes: list, loaded: Any, args: argparse.Namespace):
    """s_j per action dimension (normalised to mean 1), or None for --scores none."""
    import numpy as np
    import torch

    from daptq_ros.drift.scores import jacobian_scores, virtual_chain_scores

    if args.scores == "none":
        return None
    meta = loaded.meta
    if args.scores == "virtual":
        actions = np.concatenate([e.actions for e in episodes])
        # The chain is built from the arm's dimensions; the gripper scores the chain's mean.
        arm = [j for j, name in enumerate(meta.action_names) if "grip" not in name]
        scores = virtual_chain_scores(actions, translation_dims=arm)
    else:
        from daptq_ros.drift.analysis import load_kinematics
        from daptq_ros.errors import ConfigError

        if args.urdf is None:
            raise ConfigError("--scores jacobian needs the arm: pass --urdf ARM_OR_FILE")
        if args.urdf == SIM_ARM:
            from daptq_ros.sim.kinematics import SawyerKinematics

            kinematics = SawyerKinematics()
        else:
            kinematics = load_kinematics(args.urdf, args.ee_frame)
        names = episodes[0].joint_names
        positions = np.concatenate([e.joint_positions for e in episodes])
        scores = jacobian_scores(kinematics, names, positions, meta.action_space, meta.action_names)
    return torch.tensor(scores, dtype=torch.float32)


def _quantize(loaded: Any, episodes: list, batches: list, args: argparse.Namespace) -> dict:
    """Quantize loaded.model in place with the chosen method; the summary for the report."""
    from daptq_ros.policy.daptq import (
        DaptqOptions,
        calibration_calls,
        daptq_quantize,
        linear_layer_names,
    )
    from daptq_ros.quant import load_config, quantize
    from daptq_ros.quant.kernel_fit import bit_map_fallbacks, fit_to_kernels

    base = load_config(args.config)
    adapter, model = loaded.adapter, loaded.model
    calls = calibration_calls(adapter, batches, args.seed)
    summary: dict[str, Any] = {"timings": {}}
    if args.method == "daptq":
        scores = _drift_scores(episodes, loaded, args)
        options = DaptqOptions(
            allocation=args.allocation,
            keep_fraction=args.keep_fraction,
            average_bits=args.average_bits,
            low_bits=base.weight_bits,
            activation_bits=base.activation_bits,
            group_size=base.group_size,
            compensate=not args.no_csrc,
            csrc_layers=args.csrc_layers,
            csrc_fold=args.csrc_fold,
            rounding=args.rounding,
            seed=args.seed,
        )
        loaded.model, result = daptq_quantize(adapter, model, batches, scores, options)
        summary.update(
            config=replace(result.config, name=_daptq_name(args)),
            drift_scores=None if scores is None else scores.tolist(),
            sensitivities=result.sensitivities,
            protected=result.protected,
            compensation=result.compensation,
            fold_check=result.fold_check,
            kernel_fallbacks=result.kernel_fallbacks,
        )
        summary["timings"].update(result.timings)
        return summary
    start = time.perf_counter()
    if args.method == "qvla":
        config = _qvla_config(model, calls, base, args)
    else:
        config = replace(base, method=args.method, name=f"{args.method}_{base.name}")
    config, fallbacks = fit_to_kernels(model, config)
    if args.method == "qvla":  # its bit map was fitted while it was built
        fallbacks = bit_map_fallbacks(model, config, base.default_spec())
    summary["kernel_fallbacks"] = [f.describe() for f in fallbacks]
    summary["timings"]["allocate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    loaded.model = quantize(model, config, calls)
    summary["timings"]["quantize_s"] = time.perf_counter() - start
    summary.update(config=config, layers=len(linear_layer_names(model)))
    return summary


def _daptq_name(args: argparse.Namespace) -> str:
    """The bit config's name: the allocation plus what an ablation leaves out or changes."""
    name = f"daptq_{args.allocation}"
    if args.no_csrc:
        name += "_nocsrc"
    if args.scores != "virtual":
        name += f"_{args.scores}"
    if args.rounding != "rtn":
        name += f"_{args.rounding}"
    if args.csrc_layers != "interface" and not args.no_csrc:
        name += "_pathcsrc"
    if args.csrc_fold != "requantize" and not args.no_csrc:
        name += "_scalefold"
    return name


def _qvla_config(model: Any, calls: list, base: Any, args: argparse.Namespace):
    """The QVLA-style baseline: Hessian-proxy channel saliency, greedy demotion to the budget."""
    from daptq_ros.policy.daptq import linear_layer_names, narrow_layers
    from daptq_ros.quant.allocation import (
        CANDIDATE_BITS,
        bit_map_config,
        input_second_moments,
        qvla_allocate,
        weight_error_table,
    )
    from daptq_ros.quant.calibration import collect_layer_stats

    names = linear_layer_names(model)
    stats = collect_layer_stats(model, calls, names, keep_hessian=True)
    costs = weight_error_table(model, names, group_size=base.group_size)
    narrow = narrow_layers(model, base.group_size)
    # The knapsack's bit choices, so that it meets DA-PTQ at every budget, 2.5 bits included.
    bit_map = qvla_allocate(
        input_second_moments(stats),
        model,
        costs,
        args.average_bits,
        CANDIDATE_BITS,
        never=narrow,
    )
    return bit_map_config(base, bit_map, "qvla", model)


def _export_openvino(loaded: Any, out: Path) -> dict:
    """The OpenVINO artefact of the quantized model (its settings, as runtime.json holds them).

    The simulated layers are set to the runtime's activation arithmetic first, so the saved
    model and the artefact compute the same chunk."""
    from daptq_ros.policy.inference import VlaPolicy
    from daptq_ros.policy.openvino_export import export_openvino

    runtime = export_openvino(VlaPolicy(loaded), out)
    return {k: v for k, v in runtime.items() if k != "layers"}


def _save(loaded: Any, summary: dict, out: Path) -> None:
    """The quantized model directory and its calibration report."""
    import yaml

    from daptq_ros.policy.model_dir import save_quantized_model_dir

    config = summary["config"]
    public = _public(summary)
    save_quantized_model_dir(out, loaded, config, {k: public[k] for k in ("method", "config")})
    (out / "bits.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (out / "calibration.json").write_text(json.dumps(public, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(summary) + "\n")
    if summary.get("sensitivities"):
        _plot_sensitivities(summary, out / "sensitivities.png")


def _public(summary: dict) -> dict:
    """The summary as JSON-ready values."""
    return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in summary.items()}


def _overview(summary: dict, out: Path) -> str:
    """The terminal's default: one row of what was done, and where the report is."""
    config = summary["config"]
    rows = [
        ("method", "bit config", "kept bf16", "width fallbacks", "episodes", "s"),
        (
            summary["method"],
            config.name,
            str(len(config.keep)),
            str(len(summary.get("kernel_fallbacks", []))),
            str(summary["calibration_episodes"]),
            f"{summary['timings']['total_s']:.1f}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    exported = [f"openvino: {out / 'openvino'}"] if summary.get("openvino") else []
    return "\n".join([*lines, f"model: {out}", *exported, f"report: {out / 'report.md'}"])


def _markdown(summary: dict) -> str:
    """The readable calibration report."""
    config = summary["config"]
    lines = [
        f"# Calibration report: {summary['method']}",
        "",
        f"- model: {summary['model']}",
        f"- calibration bags: {summary['calibration_bags']}, of which "
        f"{summary['calibration_episodes']} drawn evenly over the non-empty spatial bins "
        f"(episodes per bin: {summary['bins']})",
        f"- bit config: {config.name} (method {config.method}, default W{config.weight_bits}"
        f"{'A' + str(config.activation_bits) if config.activation_bits else ''})",
        f"- kept in bf16: {len(config.keep)} layers; per-layer overrides: {len(config.overrides)}",
    ]
    fallbacks = summary.get("kernel_fallbacks", [])
    lines.append(
        f"- layers whose width the format did not fit: {len(fallbacks)}"
        + "".join(f"\n  - {line}" for line in fallbacks)
    )
    if "fold_check" in summary:
        lines.append(f"- fold check (same parameters and modules): {summary['fold_check']}")
    if summary.get("drift_scores"):
        scores = ", ".join(f"{s:.2f}" for s in summary["drift_scores"])
        lines.append(f"- drift scores s_j: {scores}")
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["timings"].items()]
    layers = summary.get("compensation", {}).get("layers", {})
    if layers:
        lines += ["", "Interface statistics vs FP, before -> after compensation (CSRC):", ""]
        lines += ["| layer | " + " | ".join(CSRC_COLUMNS) + " |"]
        lines += ["|---" * (1 + len(CSRC_COLUMNS)) + "|"]
        for name, values in layers.items():
            cells = [f"{values['before'][c]:.4g} -> {values['after'][c]:.4g}" for c in CSRC_COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_sensitivities(summary: dict, path: Path) -> None:
    """Bar plot of phi_l per layer, bf16-kept layers highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phi = summary["sensitivities"]
    kept = set(summary["config"].keep)
    names = list(phi)
    figure, axis = plt.subplots(figsize=(max(6, len(names) * 0.12), 3.5))
    colours = ["tab:red" if n in kept else "tab:blue" for n in names]
    axis.bar(range(len(names)), [phi[n] for n in names], color=colours)
    axis.set_yscale("log")
    axis.set_xlabel("layer (module order); red = kept in bf16")
    axis.set_ylabel("phi_l = mean |dL_drift/dW|")
    axis.set_title("DA-PTQ layer sensitivities")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
