"""OpenVINO rows of the deployment benchmark: the same scaled model, exported, loaded, timed.

`prepare` writes the variant as a model directory (random weights, quantized in simulated
mode) and exports it (`daptq quantize --runtime openvino`'s export); `measure` loads the
exported model as the policy node does (no torch model is built) and times whole chunks
(prefix + every flow step, batch 1) on the same observation as the torch rows. Run in child
processes of their own, like the torch rows, so that resident memory is the variant's own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def prepare(family: str, size: str, variant: str, path: Path) -> dict[str, float]:
    """Write, quantize (simulated) and export one variant into the folder `path`."""
    from daptq_ros.evidence.deploy_bench import write_scaled_model_dir
    from daptq_ros.policy.openvino_export import export_openvino, quantized_layers
    from daptq_ros.policy.quantize import load_policy_with_bits

    start = time.perf_counter()
    write_scaled_model_dir(family, size, path, variant)
    quantize_s = time.perf_counter() - start
    policy, _ = load_policy_with_bits(path, "fp32", deployed=False)
    weights = [p.numel() for p in policy.model.parameters()]
    weights += [m.codes.numel() for m in quantized_layers(policy.model).values()]
    settings = export_openvino(policy, path)
    return {
        "parameters_m": sum(weights) / 1e6,
        "quantize_s": quantize_s,
        "export_s": settings["export_s"],
    }


def measure(
    family: str, size: str, variant: str, path: Path, runs: int, **_: Any
) -> dict[str, Any]:
    """Load the exported variant and time chunks; latency, load time and resident memory."""
    import torch

    from daptq_ros.evidence.deploy_bench import _latencies, _peak_rss_mb, _rss_mb
    from daptq_ros.policy.runtime_openvino import load_openvino_policy

    start = time.perf_counter()
    policy = load_openvino_policy(path, threads=torch.get_num_threads())
    load_s = time.perf_counter() - start
    meta = policy.loaded.meta
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*meta.image_size, 3), np.uint8)
    # 12 prompt tokens with the embedded tokenizer, as the torch rows' TEXT_TOKENS
    instruction = "pick up the red cube and put it on the plate now"
    batch = policy.preprocess(image, instruction, np.zeros(policy.state_dim))
    for _ in range(2):  # warm-up
        policy.sample(batch, 0)
    totals = []
    for run in range(runs):
        started = time.perf_counter()
        policy.sample(batch, run)
        totals.append(1e3 * (time.perf_counter() - started))
    return {
        "load_s": load_s,
        "compile_s": policy.compile_s,
        "weight_mb": policy.weight_bytes / 1e6,
        "kernels": {},
        **_latencies(totals, [float("nan")] * runs, ""),
        "rss_loaded_mb": _rss_mb(),
        "peak_rss_mb": _peak_rss_mb(),
        "dynamic_quantization_group": policy.settings["dynamic_quantization_group"],
    }


if __name__ == "__main__":
    import sys

    from daptq_ros.evidence.deploy_bench import run_stage

    run_stage(sys.argv[1:], {"prepare": prepare, "measure": measure})
