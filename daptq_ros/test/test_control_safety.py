"""Axis limits and the safety filter: one behaviour per test, and properties of its invariants."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daptq_ros.control.limits import CONTINUOUS_RANGE, AxisLimits
from daptq_ros.control.safety import SafeCommand, SafetyConfig, SafetyFilter, Status, stopping_speed
from daptq_ros.errors import ControlError

TOL = 1e-9
PANDA_ARM = tuple(f"panda_joint{i}" for i in range(1, 8))


def box(lower=-1.0, upper=1.0, velocity=1.0, acceleration=2.0, names=("x", "y", "z")) -> AxisLimits:
    """A workspace box (or any axes) with the same limits on every axis."""
    n = len(names)
    return AxisLimits(
        names, np.full(n, lower), np.full(n, upper), np.full(n, velocity), np.full(n, acceleration)
    )


def run(filt: SafetyFilter, target, steps: int, dt: float = 0.01, t0: float = 0.0) -> list:
    """`steps` commands toward a fixed target (or a function of time), starting after t0."""
    out = []
    for k in range(1, steps + 1):
        now = t0 + k * dt
        out.append(filt.step(target(now) if callable(target) else target, None, now, dt))
    return out


def enabled(limits: AxisLimits, at=None, **config) -> SafetyFilter:
    filt = SafetyFilter(limits, SafetyConfig(**config))
    ok, why = filt.enable(np.zeros(len(limits)) if at is None else np.asarray(at), 0.0)
    assert ok, why
    return filt


# --- AxisLimits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("lower", [0.0, 2.0], "'b'"),  # lower above upper on axis b
        ("velocity", [1.0, 0.0], "velocity of 'b'"),
        ("acceleration", [1.0, math.nan], "acceleration of 'b'"),
        ("upper", [1.0], "need 2 values"),
    ],
)
def test_limits_name_the_bad_axis(field, value, expect):
    data = {"lower": [-1, -1], "upper": [1, 1], "velocity": [1, 1], "acceleration": [1, 1]}
    data[field] = value
    with pytest.raises(ControlError, match=expect):
        AxisLimits(("a", "b"), **{k: np.array(v, float) for k, v in data.items()})


def test_limits_reject_duplicate_names():
    with pytest.raises(ControlError, match="twice"):
        box(names=("x", "x"))


def test_with_margin_shrinks_and_refuses_to_vanish():
    inner = box().with_margin(0.1)
    np.testing.assert_allclose(inner.lower, -0.9)
    np.testing.assert_allclose(inner.upper, 0.9)
    with pytest.raises(ControlError, match="'x'"):
        box().with_margin(1.0)


def test_scaled_and_its_bounds():
    slow = box(velocity=2.0, acceleration=4.0).scaled(0.5, 0.25)
    np.testing.assert_allclose(slow.velocity, 1.0)
    np.testing.assert_allclose(slow.acceleration, 1.0)
    with pytest.raises(ControlError, match="velocity_scale"):
        box().scaled(1.5, 1.0)


def test_subset_reorders_and_names_missing_axes():
    sub = box(names=("x", "y", "z")).subset(["z", "x"])
    assert sub.names == ("z", "x")
    with pytest.raises(ControlError, match="'w'"):
        box().subset(["x", "w"])


def test_from_urdf_panda_has_the_urdf_numbers():
    from daptq_ros.drift.kinematics import arm_urdf

    limits = AxisLimits.from_urdf(arm_urdf("panda"), PANDA_ARM, default_acceleration=3.0)
    assert limits.names == PANDA_ARM
    np.testing.assert_allclose(limits.lower[[0, 3, 5]], [-2.8973, -3.0718, -0.0175])
    np.testing.assert_allclose(limits.upper[[0, 3, 5]], [2.8973, -0.0698, 3.7525])
    np.testing.assert_allclose(limits.velocity, [2.175] * 4 + [2.61] * 3)
    np.testing.assert_allclose(limits.acceleration, 3.0)
    # Without joint_names: the 7 arm joints and finger 1; finger 2 mimics it, fixed ones skipped.
    everything = AxisLimits.from_urdf(arm_urdf("panda"))
    assert everything.names == (*PANDA_ARM, "panda_finger_joint1")


URDF = """<robot name="toy">
  <joint name="base" type="fixed"/>
  <joint name="shoulder" type="revolute"><limit lower="-1" upper="1.5" velocity="2"/></joint>
  <joint name="wrist" type="continuous"/>
  <joint name="slide" type="prismatic"><limit lower="0" upper="0.3"/></joint>
  <joint name="copy" type="prismatic"><limit lower="0" upper="0.3"/><mimic joint="slide"/></joint>
</robot>"""


def test_from_urdf_string_defaults_for_continuous_and_missing_velocity():
    limits = AxisLimits.from_urdf(URDF, default_velocity=0.5)
    assert limits.names == ("shoulder", "wrist", "slide")
    np.testing.assert_allclose(limits.lower, [-1.0, -CONTINUOUS_RANGE, 0.0])
    np.testing.assert_allclose(limits.upper, [1.5, CONTINUOUS_RANGE, 0.3])
    np.testing.assert_allclose(limits.velocity, [2.0, 0.5, 0.5])
    np.testing.assert_allclose(limits.acceleration, 5.0)


@pytest.mark.parametrize(
    ("urdf", "joints", "expect"),
    [
        (URDF, ["shoulder", "elbow"], "'elbow'.*shoulder, wrist, slide"),
        ('<robot><joint name="j" type="revolute"/></robot>', None, "'j' has no <limit>"),
        ("/no/such/robot.urdf", None, "cannot read"),
        ("<robot><joint", None, "not valid XML"),
    ],
)
def test_from_urdf_errors_say_what_and_where(urdf, joints, expect):
    with pytest.raises(ControlError, match=expect):
        AxisLimits.from_urdf(urdf, joints)


def test_mapping_round_trip_and_scalar_limits():
    data = {"names": ["x", "y"], "lower": [0, -1], "upper": [1, 1], "velocity": 0.5}
    limits = AxisLimits.from_mapping(data | {"acceleration": [2, 3]})
    np.testing.assert_allclose(limits.velocity, [0.5, 0.5])
    assert AxisLimits.from_mapping(limits.to_mapping()).to_mapping() == limits.to_mapping()


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"upper": None}, r"arm.yaml: missing keys \['upper'\]"),
        ({"velocities": [1]}, r"arm.yaml: unknown keys \['velocities'\]"),
        ({"lower": [0, 0, 0]}, "arm.yaml: 'lower' has 3 values for 2 names"),
        ({"acceleration": ["fast", 1]}, "arm.yaml: 'acceleration' must hold numbers"),
        ({"lower": [2, 0]}, "arm.yaml: .*'x'.*below upper"),
    ],
)
def test_bad_mapping_names_the_key(change, expect):
    data = {"names": ["x", "y"], "lower": [0, 0], "upper": [1, 1], "velocity": 1, "acceleration": 1}
    data = {k: v for k, v in (data | change).items() if v is not None}
    with pytest.raises(ControlError, match=expect):
        AxisLimits.from_mapping(data, source="arm.yaml")


# --- SafetyFilter: one behaviour each -------------------------------------------------------


@pytest.mark.parametrize("field", ["deviation_threshold", "blend_time"])
def test_config_rejects_non_positive(field):
    with pytest.raises(ControlError, match=field):
        SafetyConfig(**{field: 0.0})


def test_starts_disabled_and_publishes_nothing():
    filt = SafetyFilter(box())
    assert filt.status is Status.DISABLED and not filt.enabled and filt.last_command is None
    command = filt.step(np.zeros(3), None, 0.0, 0.01)
    assert command.position is None and command.velocity is None
    assert filt.counters["commands"] == 0


def test_enable_refused_out_of_limits_names_axis_and_amount():
    ok, why = SafetyFilter(box()).enable(np.array([0.0, 1.25, 0.0]), 0.0)
    assert not ok and "y" in why and "0.2500" in why


def test_enable_refused_when_estopped_and_reset_needs_enable():
    filt = SafetyFilter(box())
    filt.estop("operator")
    ok, why = filt.enable(np.zeros(3), 0.0)
    assert not ok and "reset_estop" in why
    filt.reset_estop()
    assert filt.status is Status.DISABLED
    assert filt.enable(np.zeros(3), 0.0)[0]
    assert filt.status is Status.BLENDING


def test_estop_latches_a_decelerating_hold_until_reset_and_enable():
    filt = enabled(box(lower=-10, upper=10), blend_time=0.01)
    run(filt, np.full(3, 9.0), 100)  # at full speed now
    filt.estop("bumper")
    held = run(filt, np.full(3, 9.0), 100, t0=1.0)
    speeds = np.array([1.0] + [c.velocity[0] for c in held])
    assert all(c.status is Status.ESTOPPED and "e-stop: bumper" in c.reasons for c in held)
    # Braking at the acceleration limit (2 * 0.01 per step) from full speed, then at rest.
    np.testing.assert_allclose(speeds[1:], np.maximum(speeds[:-1] - 0.02, 0.0), atol=1e-12)
    assert speeds[-1] == 0.0
    filt.reset_estop()
    # Reset leaves it disabled, already at rest: the arm is released, nothing is published.
    after = run(filt, np.full(3, 9.0), 10, t0=2.0)
    assert all(c.position is None and c.status is Status.DISABLED for c in after)


def test_disable_brings_the_command_to_rest_then_releases_the_arm():
    filt = enabled(box(lower=-10, upper=10), blend_time=0.01)
    run(filt, np.full(3, 9.0), 100)  # moving
    filt.disable()
    after = run(filt, np.full(3, 9.0), 100, t0=1.0)
    published = [c for c in after if c.position is not None]
    assert published and published[-1].velocity is not None and not published[-1].velocity.any()
    assert all(c.position is None and "released" in c.reasons for c in after[len(published) :])
    # The next enable starts a new stream where the arm is now (e.g. moved while released).
    assert filt.enable(np.full(3, -5.0), 2.0)[0]
    np.testing.assert_array_equal(filt.last_command, np.full(3, -5.0))


def test_nan_target_is_counted_and_never_published():
    filt = enabled(box())
    command = filt.step(np.array([0.1, math.nan, 0.0]), None, 0.01, 0.01)
    assert command.status is Status.HOLD and np.all(np.isfinite(command.position))
    assert filt.counters["rejected_nonfinite"] == 1 and "non-finite y" in command.reasons[0]
    filt.step(np.zeros(4), None, 0.02, 0.01)
    assert filt.counters["rejected_shape"] == 1


def test_missing_target_holds():
    command = enabled(box()).step(None, None, 0.01, 0.01)
    assert command.status is Status.HOLD and command.reasons == ("no target",)


def test_deviation_guard_holds_and_names_the_axis():
    filt = enabled(box(), deviation_threshold=0.1)
    command = filt.step(np.full(3, 0.5), np.array([0.0, 0.0, 0.3]), 0.01, 0.01)
    assert command.status is Status.HOLD and filt.counters["deviation_holds"] == 1
    assert command.reasons[0].startswith("deviation z") and "0.3000 > 0.1" in command.reasons[0]
    np.testing.assert_array_equal(command.position, np.zeros(3))


def test_blend_reaches_the_target_only_after_blend_time():
    filt = enabled(box(lower=-5, upper=5, velocity=10, acceleration=100), blend_time=1.0)
    target = np.array([1.0, -1.0, 0.5])
    commands = run(filt, target, 150)
    times = np.arange(1, 151) * 0.01
    during = [c for c, t in zip(commands, times, strict=True) if t < 1.0 - 1e-9]
    after = [c for c, t in zip(commands, times, strict=True) if t >= 1.0 - 1e-9]
    assert all(c.status is Status.BLENDING for c in during)
    assert all(np.max(np.abs(c.position - target)) > 1e-5 for c in during)
    assert all(c.status is Status.ACTIVE and np.allclose(c.position, target) for c in after)


def test_far_target_reached_without_overshoot():
    filt = enabled(box(lower=-3, upper=3, velocity=1, acceleration=2), blend_time=0.01)
    positions = np.array([c.position[0] for c in run(filt, np.full(3, 2.0), 400)])
    # Only rounding (1e-12) may step back or past the target.
    assert np.all(np.diff(positions) >= -1e-12) and positions.max() <= 2.0 + 1e-12
    assert positions[-1] == pytest.approx(2.0, abs=1e-12)


def test_feasible_moving_target_is_tracked_exactly_without_clipping():
    filt = enabled(box(), blend_time=0.01)
    run(filt, np.zeros(3), 5)

    def wave(t: float) -> np.ndarray:  # starts at rest at t = 0.05; within all limits
        return np.full(3, 0.3 * (1 - math.cos(t - 0.05)))

    commands = run(filt, wave, 300, t0=0.05)
    for k, command in enumerate(commands, start=1):
        np.testing.assert_allclose(command.position, wave(0.05 + k * 0.01), atol=1e-12)
        assert not command.reasons


def test_target_outside_limits_is_clipped_to_the_box():
    filt = enabled(box(lower=-0.5, upper=0.5), blend_time=0.01)
    commands = run(filt, np.array([2.0, 0.0, -2.0]), 300)
    assert "position clipped: x, z" in commands[0].reasons
    np.testing.assert_allclose(commands[-1].position, [0.5, 0.0, -0.5])
    assert filt.counters["clipped_position"] == 300


def test_external_hold_until_resume_then_blends_again():
    filt = enabled(box(), blend_time=0.5)
    run(filt, np.full(3, 0.5), 100)
    filt.hold("camera stale")
    held = run(filt, np.full(3, -0.5), 50, t0=1.0)
    assert all(c.status is Status.HOLD for c in held) and filt.counters["stale_holds"] == 50
    filt.resume()
    moving = run(filt, np.full(3, -0.5), 300, t0=1.5)
    assert moving[0].status is Status.BLENDING and moving[-1].status is Status.ACTIVE
    np.testing.assert_allclose(moving[-1].position, -0.5)


def test_reenable_continues_from_the_held_command():
    filt = enabled(box(), blend_time=0.01)
    run(filt, np.full(3, 0.8), 30)
    filt.disable()
    stopping = run(filt, np.full(3, 0.8), 30, t0=0.3)
    assert all(c.status is Status.DISABLED for c in stopping) and np.all(stopping[-1].velocity == 0)
    assert not filt.enable(stopping[-1].position + 0.3, 0.6)[0]  # robot far from the command
    assert filt.enable(stopping[-1].position + 0.01, 0.6)[0]
    first = filt.step(np.full(3, 0.8), None, 0.61, 0.01)
    np.testing.assert_array_less(np.abs(first.position - stopping[-1].position), 0.02 * 0.01 + TOL)


def test_shorter_dt_mid_braking_keeps_position_limits_and_counts():
    limits = box(lower=-10.0, upper=2.0, velocity=1.0, acceleration=1.0, names=("x",))
    filt = enabled(limits, blend_time=0.01)
    previous = 0.0
    for k in range(1, 100):  # until the braking toward the limit begins
        command = filt.step(np.array([5.0]), None, k * 0.1, 0.1)
        if command.velocity[0] < previous:
            break
        previous = command.velocity[0]
    command = filt.step(np.array([5.0]), None, k * 0.1 + 0.001, 0.001)
    assert filt.counters["clipped_acceleration"] >= 1 and "exceeded" in command.reasons[-1]
    assert command.position[0] <= 2.0


def test_commands_are_read_only_and_dt_is_checked():
    filt = enabled(box())
    command = filt.step(np.zeros(3), None, 0.01, 0.01)
    assert isinstance(command, SafeCommand) and not command.position.flags.writeable
    with pytest.raises(ControlError, match="dt"):
        filt.step(np.zeros(3), None, 0.02, 0.0)


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    distance=st.floats(0.0, 10.0),
    acceleration=st.floats(0.1, 50.0),
    dt=st.floats(1e-3, 0.1),
)
def test_stopping_speed_is_the_largest_speed_that_stops_in_the_distance(distance, acceleration, dt):
    def covered(speed: float) -> float:
        steps = np.arange(0.0, speed / (acceleration * dt) + 1.0)
        return float(np.sum(np.maximum(speed - steps * acceleration * dt, 0.0)) * dt)

    speed = float(stopping_speed(np.array(distance), np.array(acceleration), dt))
    assert covered(speed) <= distance * (1 + 1e-9) + 1e-12
    assert covered(speed * (1 + 1e-6) + 1e-9) > distance


@st.composite
def limit_sets(draw) -> AxisLimits:
    n = draw(st.integers(1, 3))

    def floats(low, high):
        return np.array([draw(st.floats(low, high)) for _ in range(n)])

    lower = floats(-3.0, 3.0)
    return AxisLimits(
        tuple(f"axis{i}" for i in range(n)),
        lower,
        lower + floats(0.01, 5.0),
        floats(0.01, 5.0),
        floats(0.05, 50.0),
    )


# Weighted so that most steps move, where the limits are at stake; "recover" is what an
# operator does after any stop: reset_estop(), resume(), enable() where the robot is.
OPS = (
    ["step"] * 8 + ["recover"] * 3 + ["enable", "disable", "estop", "reset_estop", "hold", "resume"]
)
TARGETS = ["range", "range", "sweep", "sweep", "huge", "nan", "inf", "shape", "none"]
MEASURED = ["none", "none", "none", "near", "near", "random", "nan"]


def _vector(kind: str, limits: AxisLimits, unit: np.ndarray, last) -> np.ndarray | None:
    """A target or measured vector of `kind`; `unit` in [-0.5, 1.5] spans the range and beyond."""
    inside = limits.lower + unit * (limits.upper - limits.lower)
    out = {
        "none": None,
        "range": inside,
        "sweep": inside if last is None else last,
        "huge": np.sign(unit - 0.5) * 1e6,
        "nan": np.where(unit > 0.5, math.nan, inside),
        "inf": np.where(unit > 0.5, math.inf, -math.inf),
        "shape": np.append(inside, 0.0),
        "random": inside,
        "near": inside if last is None else last + (unit - 0.5) * 0.1,
    }[kind]
    return out


@settings(max_examples=200, deadline=None)
@given(limits=limit_sets(), data=st.data())
def test_invariants_hold_for_any_sequence(limits, data):
    n, vmax, amax = len(limits), limits.velocity, limits.acceleration
    dt = data.draw(st.sampled_from([0.002, 0.01, 0.05]))
    config = SafetyConfig(
        deviation_threshold=data.draw(st.floats(0.05, 1.0)),
        blend_time=data.draw(st.floats(0.01, 1.0)),
    )
    filt = SafetyFilter(limits, config)
    units = st.lists(st.floats(-0.5, 1.5), min_size=n, max_size=n).map(np.array)
    now, ever_enabled, latched, stopping = 0.0, False, False, False
    velocity = None
    published = 0
    for _ in range(data.draw(st.integers(1, 30))):
        op = data.draw(st.sampled_from(OPS))
        if op == "recover":
            filt.reset_estop()
            filt.resume()
            latched = False
        if op in ("enable", "recover"):
            kind = "near" if op == "recover" else data.draw(st.sampled_from(["random", "nan"]))
            measured = _vector(kind, limits, data.draw(units), filt.last_command)
            ok, why = filt.enable(measured, now)
            assert isinstance(why, str) and why
            assert not (ok and latched), "enable must be refused while e-stopped"
            ever_enabled |= ok
            stopping &= not ok
        elif op == "estop":
            filt.estop("test")
            latched = stopping = True
        elif op == "reset_estop":
            filt.reset_estop()
            latched = False
        elif op == "step":
            target_kind = data.draw(st.sampled_from(TARGETS))
            measured_kind = data.draw(st.sampled_from(MEASURED))
            target = _vector(target_kind, limits, data.draw(units), filt.last_command)
            # A sweep moves the target at up to twice the velocity limit, across the limits.
            sweep = (data.draw(units) - 0.5) * 4 * vmax * dt if target_kind == "sweep" else 0
            measured_unit = data.draw(units)
            for _ in range(data.draw(st.integers(1, 40))):
                now += dt
                if target_kind == "sweep":
                    target = target + sweep
                previous = filt.last_command
                measured = _vector(measured_kind, limits, measured_unit, previous)
                command = filt.step(target, measured, now, dt)
                if not ever_enabled:
                    assert command.position is None and command.velocity is None
                    continue
                if command.position is None:  # disabled at rest: released, a new stream next
                    assert command.status in (Status.DISABLED, Status.ESTOPPED)
                    assert not filt.enabled
                    assert velocity is None or not velocity.any()
                    velocity = None
                    continue
                published += 1
                p, v = command.position, command.velocity
                assert np.all(np.isfinite(p)) and np.all(np.isfinite(v))
                assert np.all(limits.lower <= p) and np.all(p <= limits.upper)
                assert np.all(np.abs(v) <= vmax + TOL)
                before = np.zeros(n) if velocity is None else velocity
                assert np.all(np.abs(v - before) <= amax * dt + TOL)
                assert np.all(np.abs(p - previous) <= vmax * dt + TOL)
                # It can always still stop inside the limits, braking at the acceleration limit.
                ahead = np.where(v > 0, limits.upper - p, p - limits.lower)
                braked = np.maximum(np.abs(v) - amax * dt, 0.0)
                assert np.all(braked <= stopping_speed(ahead, amax, dt) + TOL)
                np.testing.assert_allclose(v, (p - previous) / dt, atol=TOL)
                if command.status in (Status.DISABLED, Status.ESTOPPED, Status.HOLD):
                    # A hold brakes as hard as allowed, never reverses, and what rests stays put.
                    speed = np.maximum(np.abs(before) - amax * dt, 0.0)
                    np.testing.assert_allclose(np.abs(v), speed, rtol=0, atol=TOL)
                    assert np.all(v * before >= 0)
                    still = before == 0
                    assert np.array_equal(p[still], previous[still])
                if stopping:  # from an e-stop until the next successful enable
                    assert command.status in (Status.ESTOPPED, Status.DISABLED)
                velocity = v
        else:
            getattr(filt, op)(*(["test"] if op == "hold" else []))
    assert filt.counters["commands"] == published
