"""Kinematics from URDF: pinocchio reference calls, finite differences, names and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pin = pytest.importorskip("pinocchio")

from daptq_ros.drift.kinematics import (  # noqa: E402  (after the importorskip above)
    ARMS,
    Kinematics,
    KinematicsError,
    arm_urdf,
    available_arms,
)

if "panda" not in available_arms():
    pytest.skip("example-robot-data is not installed", allow_module_level=True)

PANDA_ARM = [f"panda_joint{i}" for i in range(1, 8)]


@pytest.fixture(scope="module")
def panda() -> Kinematics:
    return Kinematics.from_robot_name("panda")


def random_q(kin: Kinematics, rng: np.random.Generator) -> np.ndarray:
    low, high = kin.model.lowerPositionLimit, kin.model.upperPositionLimit
    return rng.uniform(low, high)


def test_panda_defaults(panda: Kinematics) -> None:
    assert panda.joint_names == tuple(PANDA_ARM)
    assert panda.ee_frame == "panda_hand_tcp"


def test_fk_and_jacobian_match_pinocchio(panda: Kinematics) -> None:
    # Reference: the full URDF (fingers included) through pinocchio's own calls.
    model = pin.buildModelFromUrdf(str(arm_urdf("panda")))
    data = model.createData()
    frame = model.getFrameId("panda_hand_tcp")
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = random_q(panda, rng)
        full_q = np.concatenate([q, rng.uniform(0, 0.04, 2)])  # fingers do not move the TCP
        pin.forwardKinematics(model, data, full_q)
        pin.updateFramePlacements(model, data)
        reference = data.oMf[frame]
        position, quat = panda.fk(q)
        np.testing.assert_allclose(position, reference.translation, atol=1e-12)
        rotation = pin.Quaternion(*np.roll(quat, 1)).toRotationMatrix()  # (w, x, y, z)
        np.testing.assert_allclose(rotation, reference.rotation, atol=1e-12)
        np.testing.assert_allclose(panda.transform(q), reference.homogeneous, atol=1e-12)
        jacobian = pin.computeFrameJacobian(
            model, data, full_q, frame, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED
        )
        np.testing.assert_allclose(panda.jacobian(q), jacobian[:, :7], atol=1e-12)


def test_jacobian_matches_finite_differences(panda: Kinematics) -> None:
    rng = np.random.default_rng(1)
    eps = 1e-6
    for _ in range(5):
        q = random_q(panda, rng)
        numeric = np.zeros((6, len(q)))
        for j in range(len(q)):
            step = np.zeros(len(q))
            step[j] = eps
            plus, minus = panda.transform(q + step), panda.transform(q - step)
            numeric[:3, j] = (plus[:3, 3] - minus[:3, 3]) / (2 * eps)
            # World-aligned angular velocity: log(R+ R-^T) / (2 eps).
            numeric[3:, j] = pin.log3(plus[:3, :3] @ minus[:3, :3].T) / (2 * eps)
        np.testing.assert_allclose(panda.jacobian(q), numeric, atol=1e-6)


def test_quaternion_sign_and_batch(panda: Kinematics) -> None:
    rng = np.random.default_rng(2)
    qs = np.stack([random_q(panda, rng) for _ in range(6)])
    positions, quats = panda.fk_batch(qs)
    assert positions.shape == (6, 3) and quats.shape == (6, 4)
    assert (quats[:, 3] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0)
    for i, q in enumerate(qs):
        np.testing.assert_array_equal(panda.fk(q)[0], positions[i])


def test_joint_state_mapping(panda: Kinematics) -> None:
    names = ["panda_finger_joint1", *reversed(PANDA_ARM)]
    positions = np.array([[0.04, *range(7, 0, -1)], [0.0, *range(17, 10, -1)]], dtype=float)
    q = panda.q_from_joint_state(names, positions)
    np.testing.assert_array_equal(q, [range(1, 8), range(11, 18)])
    np.testing.assert_array_equal(panda.q_from_joint_state(names, positions[0]), range(1, 8))


def test_joint_name_mismatch_names_both_lists(panda: Kinematics) -> None:
    with pytest.raises(KinematicsError, match=r"lack .*'panda_joint7'.*name \['joint1'"):
        panda.q_from_joint_state(["joint1", *PANDA_ARM[:-1]], np.zeros(7))


def test_unknown_frame_lists_frames() -> None:
    with pytest.raises(KinematicsError, match=r"no frame 'gripper'.*panda_hand_tcp"):
        Kinematics.from_robot_name("panda", ee_frame="gripper")


def test_missing_and_invalid_urdf(tmp_path: Path) -> None:
    with pytest.raises(KinematicsError, match="URDF not found"):
        Kinematics.from_urdf(tmp_path / "robot.urdf", "tool0")
    with pytest.raises(KinematicsError, match="robot_description: not a valid URDF"):
        Kinematics.from_urdf("<robot name='x'><link name='a'/><joint", "a")


def test_robot_description_string_equals_file(panda: Kinematics) -> None:
    xml = arm_urdf("panda").read_text()
    from_xml = Kinematics.from_urdf(xml, "panda_hand_tcp", ARMS["panda"].gripper_joints)
    q = random_q(panda, np.random.default_rng(3))
    np.testing.assert_array_equal(from_xml.fk(q)[0], panda.fk(q)[0])


def test_continuous_joint_takes_an_angle(tmp_path: Path) -> None:
    urdf = tmp_path / "wheel.urdf"
    urdf.write_text(
        """<robot name="wheel">
  <link name="base"/><link name="arm"/><link name="tip"/>
  <joint name="spin" type="continuous">
    <parent link="base"/><child link="arm"/><axis xyz="0 0 1"/>
  </joint>
  <joint name="tip_joint" type="fixed">
    <parent link="arm"/><child link="tip"/><origin xyz="1 0 0"/>
  </joint>
</robot>"""
    )
    kin = Kinematics.from_urdf(urdf, "tip")
    assert kin.model.nq == 2 and kin.joint_names == ("spin",)
    position, _ = kin.fk([np.pi / 2])
    np.testing.assert_allclose(position, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(kin.jacobian([0.0])[:, 0], [0, 1, 0, 0, 0, 1], atol=1e-12)


def test_wrong_q_length(panda: Kinematics) -> None:
    with pytest.raises(KinematicsError, match="q has 3 values but the model has 7 joints"):
        panda.fk(np.zeros(3))


@pytest.mark.parametrize("name", sorted(ARMS))
def test_every_shipped_arm_loads(name: str) -> None:
    if name not in available_arms():
        pytest.skip(f"{name} is not shipped by the installed example-robot-data")
    kin = Kinematics.from_robot_name(name)
    q = np.zeros(len(kin.joint_names))
    assert kin.jacobian(q).shape == (6, len(kin.joint_names))
    assert np.isfinite(kin.fk(q)[0]).all()


def test_unknown_arm() -> None:
    with pytest.raises(KinematicsError, match="unknown arm 'kuka'; known arms: panda"):
        Kinematics.from_robot_name("kuka")


LIMIT = "<limit lower='0' upper='1' effort='1' velocity='1'/>"
TWO_ROOTS = "<robot name='x'><link name='a'/><link name='b'/></robot>"
MISSING_CHILD = (
    "<robot name='x'><link name='a'/><joint name='j' type='revolute'><parent link='a'/>"
    f"<child link='hand'/><axis xyz='0 0 1'/>{LIMIT}</joint></robot>"
)
MALFORMED = "<robot name='x'>\n<link name='a'/>\n<joint name='j'\n</robot>\n"
XACRO = (
    "<robot xmlns:xacro='http://www.ros.org/wiki/xacro' name='x'>"
    "<xacro:property name='r' value='1'/><link name='a'/><link name='b'/></robot>"
)


@pytest.mark.parametrize(
    ("urdf", "cause"),
    [
        (TWO_ROOTS, r"Two root links found: \[a\] and \[b\]"),
        (MISSING_CHILD, r"child link \[hand\] of joint \[j\] not found"),
        (MALFORMED, r"XML_ERROR.*Line number=3"),
    ],
)
def test_invalid_urdf_keeps_urdfdom_cause(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], urdf: str, cause: str
) -> None:
    with pytest.raises(KinematicsError, match=rf"robot_description: not a valid URDF \(.*{cause}"):
        Kinematics.from_urdf(urdf, "a")
    (tmp_path / "robot.urdf").write_text(urdf)
    with pytest.raises(
        KinematicsError, match=rf"robot\.urdf: not a valid URDF \(.*{cause}"
    ) as error:
        Kinematics.from_urdf(tmp_path / "robot.urdf", "a")
    assert "xacro" not in str(error.value)
    assert "Error" not in capfd.readouterr().err  # the cause is in the message, not on stderr


def test_xacro_hint_only_for_xacro(tmp_path: Path) -> None:
    hint = r"expand the xacro first \(xacro robot\.urdf\.xacro > robot\.urdf\)"
    with pytest.raises(KinematicsError, match=rf"Two root links found.*; {hint}"):
        Kinematics.from_urdf(XACRO, "a")
    (tmp_path / "arm.urdf.xacro").write_text(TWO_ROOTS)
    with pytest.raises(KinematicsError, match=rf"arm\.urdf\.xacro: .*Two root links.*; {hint}"):
        Kinematics.from_urdf(tmp_path / "arm.urdf.xacro", "a")
