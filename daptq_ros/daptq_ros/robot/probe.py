"""What the policy node learns from its policy before the first frame: timing and chunk method."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from daptq_ros.control.runtime import ChunkPolicy
from daptq_ros.control.timing import ChunkTiming, control_period

PROBE_IMAGE_SIZE = (96, 192)  # blank frame for the start-up inference when a model has no size
FALLBACK_PERIOD_S = 0.1  # chunk row time assumed when a model neither says nor answers


def probe(policy: ChunkPolicy, params: Mapping[str, Any]) -> tuple[ChunkTiming, str]:
    """Time an inference on a blank observation; the timing and why it failed ("" if not).

    The probe learns the chunk's horizon and dt and the inference latency before the first real
    frame, so the control rate can follow the model and a rate that cannot work is reported at
    start. It also pays the first call's one-time costs off the control loop.
    """
    meta = getattr(getattr(policy, "loaded", None), "meta", None)
    height, width = getattr(meta, "image_size", PROBE_IMAGE_SIZE)
    blank = np.zeros((height, width, 3), np.uint8)
    instruction = str(params["instruction"]) or "probe"
    state = np.zeros(getattr(policy, "state_dim", 4))
    error = ""
    try:
        policy.predict(blank, instruction, state)  # the first call pays one-time costs
        start = time.monotonic()
        chunk = policy.predict(blank, instruction, state)
        horizon, dt = len(chunk.actions), float(chunk.dt)
        latency = time.monotonic() - start
    except Exception as failure:  # reported; the control loop then reports each failure too
        error = f"the start-up inference failed: {type(failure).__name__}: {failure}"
        horizon = int(getattr(meta, "horizon", 1))
        dt = float(getattr(meta, "dt", FALLBACK_PERIOD_S))
        latency = math.nan
    period = control_period(float(params["control_hz"]), horizon, dt)
    return ChunkTiming(horizon, dt, latency, period), error


def chunk_method(params: Mapping[str, Any], policy: ChunkPolicy) -> tuple[str, str]:
    """How chunks join ("rtc" where asked, or auto, and the policy can; else the merge's way)
    and, when "rtc" was asked and cannot run, why."""
    if str(params["chunk_merge"]) == "ensemble":
        return "ensemble", ""
    wanted = str(params["chunk_method"])
    if wanted != "crossfade" and getattr(policy, "chunk_guidance", "") == "rtc":
        return "rtc", ""
    if wanted == "rtc":
        return "crossfade", "chunk_method rtc needs a flow-matching policy (pi0); crossfade runs"
    return "crossfade", ""
