"""How the policy node builds its policy: the model directory at a bit config, heap frozen.

Kept apart from the node's logic (policy_core) so that the core never imports torch: the
builder imports it lazily, the first time a model is built.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daptq_ros.control.runtime import ChunkPolicy


def default_policy_builder(params: Mapping[str, Any]) -> Callable[[str], ChunkPolicy]:
    """`bits -> policy` for the node's model, device, runtime and flow steps (imports torch
    lazily). With runtime openvino, `bits` is "fp32" (the model directory as exported) or
    another exported directory; one without an exported model runs on torch, and the policy's
    `runtime_warning` says so (the node puts it on /diagnostics)."""

    def build(bits: str) -> ChunkPolicy:
        import torch

        from daptq_ros.policy.model_dir import default_model_dir
        from daptq_ros.policy.quantize import FULL_PRECISION, load_policy_with_bits
        from daptq_ros.policy.runtime_openvino import RUNTIME_DIR, has_openvino_artefact

        torch.set_num_threads(int(params["num_threads"]))
        model = params["model"]
        directory = default_model_dir("pi0") if model == "default" else model
        runtime, warning = str(params["runtime"]), ""
        if runtime == "openvino":
            if bits != FULL_PRECISION and Path(bits).is_dir():
                directory, bits = bits, FULL_PRECISION
            if bits != FULL_PRECISION or not has_openvino_artefact(directory):
                runtime = "torch"
                warning = (
                    f"runtime openvino: {directory} at bit config {bits} has no exported "
                    f"{RUNTIME_DIR}/ model (daptq quantize --runtime openvino); running torch"
                )
        steps = int(params["flow_steps"]) or None
        policy, _ = load_policy_with_bits(
            directory,
            bits,
            True,
            str(params["device"]),
            steps,
            whole_model_bf16=bool(params["whole_model_bf16"]),
            kernel_choice=str(params["kernel_choice"]),
            runtime=runtime,
        )
        policy.runtime_warning = warning
        freeze_heap()
        return policy

    return build


def freeze_heap() -> None:
    """Move every live object (model, libraries) out of the garbage collector's sight.

    A full collection traverses the whole heap; with transformers and a model loaded it paused
    the command thread for ~20 ms (bench/control_loop.py, default model, 50 Hz commands:
    jitter p99 19.3 ms before, 3.8 ms with this call; docs/benchmarks.md). Unfreezing first
    lets a swap's collection free the old model's reference cycles before the heap is frozen
    again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
