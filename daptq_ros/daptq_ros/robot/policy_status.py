"""What the policy node reports: its PolicyStatus fields and its /diagnostics entry.

Read from the node's core (robot/policy_core.py): what runs, why it holds, achieved rates,
drops and clipping, and the faults, in one place for both messages.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from daptq_ros.bags.convert import sec_to_ns
from daptq_ros.bags.robot_msgs import diagnostic_array_msg
from daptq_ros.control.runtime import SwapState


def fields(core: Any, now: float) -> dict[str, Any]:
    """The fields of daptq_ros_interfaces/PolicyStatus."""
    building = core.worker.swap_state is SwapState.BUILDING
    return {
        "model": core.model_label,
        "family": core.family,
        "bit_config": core.bit_config,
        "instruction": core.instruction,
        "enabled": core.safety.enabled,
        "dry_run": core.dry_run,
        "estopped": core.safety.estopped,
        "safety_status": core.safety.status.value,
        "hold_reasons": core.hold_reasons(now),
        "inference_latency": _nan_to_zero(core.worker.mean_latency()),
        "inference_hz": _rate(core.chunk_times),
        "command_hz": _rate(core.command_times),
        "dropped_frames": core.worker.counters["dropped"],
        "rejected_actions": core.counters["rejected_actions"]
        + core.safety.counters["rejected_nonfinite"],
        "clipped_actions": core.counters["clipped_actions"]
        + core.safety.counters["clipped_velocity"]
        + core.safety.counters["clipped_acceleration"]
        + core.safety.counters["clipped_position"],
        "swap_in_progress": building,
        "pending_bit_config": core.worker.swap_label if building else "",
        "fault": core.fault,
        "chunk_method": core.last_guidance or core.chunk_method,
        "timeline_rate": float(core.replanner.timeline.rate),
    }


def diagnostics(core: Any, now: float, node: str) -> Any:
    """/diagnostics of node `node`: model, bit config, rates, drops, clipping, watchdog state."""
    status_fields = fields(core, now)
    level, message = "OK", status_fields["safety_status"]
    estop = "e-stop latched" if status_fields["estopped"] else ""
    errors = [e for e in (estop, core.fault, core.last_error, core.swap_error) if e]
    runtime_warning = str(getattr(core.worker.policy, "runtime_warning", ""))
    runtime_warning = "; ".join(w for w in (runtime_warning, core.chunk_method_note) if w)
    if errors:
        level, message = "ERROR", "; ".join(errors)
    elif status_fields["hold_reasons"] and status_fields["enabled"]:
        level, message = "WARN", "holding: " + "; ".join(status_fields["hold_reasons"])
    elif runtime_warning:
        level, message = "WARN", runtime_warning
    elif core.replanner.overrun_reason and status_fields["enabled"]:
        level, message = "WARN", core.replanner.overrun_reason
    values = {k: v for k, v in status_fields.items() if k != "hold_reasons"}
    values.update(core.counters)
    replanner = core.replanner
    values["overrun"] = replanner.overrun_reason or "no: each chunk lasts until the next arrives"
    values["overrun_policy"] = replanner.overrun
    values["latency_estimate_s"] = round(replanner.latency(), 4)
    values["delay_estimate_s"] = round(replanner.delay(), 4)
    values["injected_latency_s"] = replanner.inject_s
    # Where an inference's time goes (wall s, the last one), to tell the model from its wrapping.
    timing = getattr(core.worker.policy, "last_timing", {})
    values["inference_breakdown"] = ", ".join(f"{k} {v:.4f} s" for k, v in timing.items())
    values["chunk_timing"] = core.timing.describe()
    values["watchdog"] = "; ".join(status_fields["hold_reasons"]) or "ok"
    values["runtime"] = str(getattr(core.worker.policy, "runtime", "torch"))
    values["runtime_warning"] = runtime_warning
    values["last_swap_s"] = round(_nan_to_zero(core.worker.last_swap_s), 3)
    values.update(core.guard.fields() if core.guard is not None else {})
    status = (f"daptq {node}", level, message, values)
    return diagnostic_array_msg(core.types, sec_to_ns(now), [status], core.robot.name)


def _rate(times: deque[float]) -> float:
    """Events per second over the stored event times (0 with fewer than two)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _nan_to_zero(value: float) -> float:
    return 0.0 if np.isnan(value) else value
