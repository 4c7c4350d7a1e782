"""The paper-style results table (our Tables 2-4): every quantization method on paired episodes.

For each model directory: FP32 and BF16 references, RTN W8A8 / W4A8, SmoothQuant W8A8, AWQ W4,
GPTQ W4, the QVLA-style baseline, DA-PTQ (top-k and budgeted) and the ablations, each quantized
by `daptq quantize` on the calibration bags and evaluated by `daptq eval` on the same seeds as
FP32, exactly as a user would run them. This module runs those steps (the quantizations as one
batch, on Ray workers when there are any); `evidence/results_stats` computes the comparisons
and `evidence/results_markdown` writes them. Finished steps are kept in the work folder, so an
interrupted table resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daptq_ros.errors import DaptqError
from daptq_ros.evidence.results_stats import (
    METHODS,
    MethodRun,
    ModelTable,
    TableOptions,
    check_methods,
    mean_deviation_curve,
)

Runner = Callable[[list[str]], int]  # the `daptq` CLI: arguments -> exit status
Batch = Callable[[list[list[str]]], list[tuple[int, str]]]  # commands -> (status, stderr tail)
IDENTITY_FILE = "model_identity.json"  # in each model's work folder: whose runs it holds


def model_identity(model: Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """What names the evaluated weights: sha256 of the weights file, and from the manifest's
    `provenance` the training steps and revision."""
    from daptq_ros.policy.model_meta import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(model / WEIGHTS_FILE, "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return {
        "weights_sha256": digest.hexdigest(),
        "training_steps": provenance.get("training", {}).get("steps"),
        "git_revision": provenance.get("git_revision"),
    }


def _claim_work_folder(work: Path, identity: dict[str, Any]) -> None:
    """Tie `work` to one model's weights: kept runs of other weights must not be reused."""
    path = work / IDENTITY_FILE
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("weights_sha256") != identity["weights_sha256"]:
            raise DaptqError(
                f"{work} holds the runs of other weights (sha256 "
                f"{str(kept.get('weights_sha256'))[:12]}, now {identity['weights_sha256'][:12]}): "
                "the model changed since; pass a new --work folder or delete this one"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


@dataclass(frozen=True)
class Steps:
    """How the report's `daptq` commands run: one at a time in this process (`run`), and the
    independent quantizations as one batch (`batch`: per command its exit status and the end
    of its stderr), on Ray workers when the report has any."""

    run: Runner
    batch: Batch


@dataclass(frozen=True)
class _Model:
    """One model of the report, checked against its work folder."""

    path: Path
    label: str
    work: Path
    family: str
    action_space: str
    identity: dict[str, Any]
    layers: dict[str, int]  # Linear layer -> weight count


def run_tables(
    models: Sequence[tuple[Path, str]], options: TableOptions, work: Path, out: Path, steps: Steps
) -> list[ModelTable]:
    """Every method on every (model directory, label): all quantizations first (one batch),
    then each method's evaluation on the shared seeds and its drift against FP32."""
    prepared = [_prepare(path, label, work / label) for path, label in models]
    _quantize_all(prepared, options, steps)
    return [_model_table(model, options, out / "drift" / model.label, steps) for model in prepared]


def _prepare(path: Path, label: str, work: Path) -> _Model:
    """Load the model's manifest and layer sizes, and claim its work folder."""
    from daptq_ros.policy.daptq import linear_layer_names
    from daptq_ros.policy.model_dir import load_model_dir

    loaded = load_model_dir(path)
    identity = model_identity(path, loaded.meta.provenance)
    _claim_work_folder(work, identity)
    layers = {
        name: loaded.model.get_submodule(name).weight.numel()
        for name in linear_layer_names(loaded.model)
    }
    meta = loaded.meta
    return _Model(path, label, work, meta.family, meta.action_space, identity, layers)


def _quantized_dir(model: _Model, method: str) -> Path:
    return model.work / "models" / method


def _quantize_all(models: Sequence[_Model], options: TableOptions, steps: Steps) -> None:
    """Run every quantization not kept from before, as one batch; a failure names its method."""
    todo = [
        (model, name)
        for model in models
        for name in check_methods(options.methods)
        if METHODS[name] is not None
        and not (_quantized_dir(model, name) / "calibration.json").is_file()
    ]
    commands = []
    for model, name in todo:
        command = ["quantize", "--model", str(model.path), "--calib", *options.calib]
        command += [*METHODS[name], "--bins", str(options.bins), "--threads", str(options.threads)]
        commands.append([*command, "--out", str(_quantized_dir(model, name))])
    failed = [
        f"{name} on {model.path}" + (f": {tail.strip().splitlines()[-1]}" if tail.strip() else "")
        for (model, name), (status, tail) in zip(todo, steps.batch(commands), strict=True)
        if status != 0
    ]
    if failed:
        raise DaptqError(
            f"daptq quantize failed for {len(failed)} method(s): "
            + "; ".join(failed)
            + ". Finished steps are kept: fix the cause and run the report again to resume"
        )


def _model_table(model: _Model, options: TableOptions, drift_out: Path, steps: Steps) -> ModelTable:
    """Evaluate every method of one model (quantized already), then score drift against FP32."""
    from daptq_ros.quant.allocation import weighted_bits
    from daptq_ros.quant.config import load_config

    runs = {}
    for name in check_methods(options.methods):
        if METHODS[name] is None:
            used, calibration, bit_map = model.path, {}, dict.fromkeys(model.layers, 32)
        else:
            used = _quantized_dir(model, name)
            calibration = json.loads((used / "calibration.json").read_text())
            config = load_config(used / "bits.yaml")
            bit_map = {layer: config.spec_for(layer).weight_bits for layer in model.layers}
        summary = _evaluate(name, used, options, model.work, steps.run)
        bits = weighted_bits(bit_map, model.layers)
        calibration_s = float(calibration.get("timings", {}).get("total_s", 0.0))
        run = MethodRun(name, summary, calibration_s, bits, bit_map)
        run.fold_check = calibration.get("fold_check")
        run.episodes = {
            (e["task"], int(e["seed"])): {"success": float(e["success"]), "ee_position_rmse": None}
            for e in summary["episodes_run"]
        }
        runs[name] = run
    _score_drift(runs, model.work, drift_out)
    shown = model.path.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())  # the repository-relative path, not this machine's
    return ModelTable(
        model.label, str(shown), model.family, runs, model.identity, model.action_space
    )


def _evaluate(
    name: str, model: Path, options: TableOptions, work: Path, daptq: Runner
) -> dict[str, Any]:
    """Evaluate one method on the shared seeds (kept when done before); its eval.json."""
    run = work / "runs" / name
    if not (run / "eval.json").is_file():
        # A folder without eval.json is an evaluation this report started and was stopped in;
        # its bags are incomplete and `daptq eval` refuses to write over them.
        shutil.rmtree(run, ignore_errors=True)
        command = ["eval", "--model", str(model), "--episodes", str(options.episodes)]
        command += ["--seed", str(options.seed), "--threads", str(options.threads)]
        command += ["--workers", str(options.workers)]
        command += ["--tasks", *options.tasks] if options.tasks else []
        if daptq([*command, "--out", str(run)]) != 0:
            raise DaptqError(f"daptq eval failed for method {name} on {model}")
    return json.loads((run / "eval.json").read_text())


def _score_drift(runs: dict[str, MethodRun], work: Path, drift_out: Path) -> None:
    """Drift of each run against the FP32 rollouts of the same seeds: summaries, per-episode
    RMSE, the mean deviation curve, and a drift report per method.

    One analysis per run: runs are told apart by method here, not by their bit-config name
    (the ablations share DA-PTQ's). The scores are kept beside the run (drift_scores.json), so
    assembling the table again does not re-read every bag.
    """
    for name, run in runs.items():
        if name == "fp32":
            continue
        scores = _drift_scores(work / "runs" / name, work / "runs" / "fp32", drift_out / name)
        run.drift = scores["drift"]
        for task, seed, rmse in scores["ee_position_rmse"]:
            if (task, seed) in run.episodes:
                run.episodes[(task, seed)]["ee_position_rmse"] = rmse
        if scores["curve"] is not None:
            grid, mean = scores["curve"]
            run.curve = (np.asarray(grid), np.asarray(mean))


def _drift_scores(run: Path, reference: Path, report: Path) -> dict[str, Any]:
    """One run's drift summaries, per-episode EE RMSE and mean curve (cached), and its report."""
    from daptq_ros.bags.episode import META_SEED, META_TASK
    from daptq_ros.drift.analysis import analyze
    from daptq_ros.evidence.drift_report import write_report

    cache = run / "drift_scores.json"
    if cache.is_file() and (report / "report.md").is_file():
        return json.loads(cache.read_text())
    analysis = analyze([run], reference)
    write_report(analysis, report)
    (summary,) = analysis.summaries.values()
    curve = mean_deviation_curve(analysis.episodes)
    scores = {
        "drift": {metric: s.to_dict() for metric, s in summary.items()},
        "ee_position_rmse": [
            [r.run.metadata.get(META_TASK, ""), int(r.run.metadata.get(META_SEED, -1)), rmse]
            for r in analysis.episodes
            if (rmse := r.metrics.ee_position_rmse) is not None
        ],
        "curve": None if curve is None else [curve[0].tolist(), curve[1].tolist()],
    }
    cache.write_text(json.dumps(scores) + "\n")
    return scores
