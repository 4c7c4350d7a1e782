"""The policy node's replanning: RTC prefixes to the policy, injected latency, overrun modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from robot_fakes import Chunk, ConstantPolicy
from robot_rig import PERIOD, Rig
from test_robot_policy_core import assert_within_limits

from daptq_ros.control.replan import RATE_SLEW

DT = 0.0125  # the fakes' row time


class GuidedPolicy(ConstantPolicy):
    """A flow-matching stand-in: takes prefix=, records it, names its guidance."""

    chunk_guidance = "rtc"

    def __init__(self) -> None:
        super().__init__()
        self.prefixes = []

    def predict(self, image, instruction, state, prefix=None) -> Chunk:
        self.prefixes.append(prefix)
        chunk = super().predict(image, instruction, state)
        ramp = chunk.actions + 0.01 * np.arange(len(chunk.actions))[:, None]
        return Chunk(ramp, chunk.dt, chunk.space, chunk.names, "rtc (identity)")


def values(rig: Rig) -> dict[str, str]:
    status = rig.core.diagnostics_msg(rig.t).status[0]
    return {v.key: v.value for v in status.values} | {"message": status.message}


def test_rtc_gives_the_policy_the_held_chunks_rows_and_names_the_method(rig) -> None:
    policy = GuidedPolicy()
    r = rig(policy=policy, chunk_method="rtc", inject_latency_s=0.03)
    r.run(4)
    r.enable()
    r.run(120)
    prefixes = [p for p in policy.prefixes if p is not None]
    assert prefixes, "no chunk was asked for with a prefix"
    last = prefixes[-1]
    # The delay is timeline time from observation to use: the injected latency (released at
    # the next command tick) at the timeline's rate, in rows.
    delay = r.core.replanner.delay()
    assert 0 < delay <= math.ceil(0.03 / PERIOD) * PERIOD + 1e-9
    assert last.delay == math.ceil(delay / DT - 1e-6)
    assert last.jacobian == "identity" and 1 <= len(last.actions) <= 8
    # The held chunks' rows as they will execute (ramps from 0.5 by 0.01, crossfaded).
    assert np.all((last.actions[:, 0] >= 0.5 - 1e-9) & (last.actions[:, 0] <= 0.57 + 1e-9))
    assert r.core.status_fields(r.t)["chunk_method"] == "rtc (identity)"


def test_asking_rtc_of_a_policy_without_it_runs_crossfade_and_says_so(rig) -> None:
    r = rig(chunk_method="rtc")
    r.run(4)
    assert r.core.chunk_method == "crossfade"
    assert "needs a flow-matching policy" in values(r)["runtime_warning"]


@pytest.mark.parametrize("overrun", ["slow", "hold"])
def test_inference_longer_than_a_chunk_never_jumps_and_says_why(rig, overrun) -> None:
    r = rig(overrun=overrun, blend_time_s=0.05)
    r.run(4)
    r.enable()
    r.run(40)
    r.core.accept_parameter("inject_latency_s", 1.25 * 8 * DT)  # at run time, as `ros2 param`
    rates, reasons, statuses = [], set(), []
    for _ in range(240):
        r.tick()
        rates.append(r.core.replanner.timeline.rate)
        reasons.add(values(r)["overrun"])
        statuses.append(r.core.safety.status.value)
    # Waiting at a chunk's end, the arm stands at its last row: it is not re-blended after.
    assert set(statuses[-120:]) == {"active"}
    assert_within_limits(r.core, r.commands())
    assert any("outlasts" in reason for reason in reasons)
    if overrun == "slow":
        assert min(rates[-120:]) < 0.8  # slowed down, not stopped
        # Once the latency estimate has caught up with the step, the rate never steps.
        assert np.all(np.abs(np.diff(rates[-120:])) <= RATE_SLEW * PERIOD + 1e-9)
    else:
        assert any("holding" in reason for reason in reasons)
    assert r.core.safety.enabled and r.core.scheduler.counters["added"] > 5
