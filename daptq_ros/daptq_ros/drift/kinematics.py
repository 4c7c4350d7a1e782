"""Forward kinematics and frame Jacobians of an arm's end-effector frame, from its URDF."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin
from numpy.typing import ArrayLike, NDArray

from daptq_ros.errors import DaptqError


class KinematicsError(DaptqError):
    """A URDF, frame or joint list that the kinematics cannot use."""


@dataclass(frozen=True)
class Arm:
    """An arm shipped by example-robot-data: its URDF, default tool frame, gripper joints."""

    urdf: str  # relative to example-robot-data's robots/ folder
    ee_frame: str
    gripper_joints: tuple[str, ...] = ()


# The gripper joints are locked (held at 0) by default: they do not move the tool frame, and
# joint_states of the arm alone must still fill every model joint.
ARMS: dict[str, Arm] = {
    "panda": Arm(
        "panda_description/urdf/panda.urdf",
        "panda_hand_tcp",
        ("panda_finger_joint1", "panda_finger_joint2"),
    ),
    "ur5": Arm("ur_description/urdf/ur5_robot.urdf", "tool0"),
    "so101": Arm("so_arm_description/urdf/so101.urdf", "gripper_frame_link", ("gripper",)),
    "xarm7": Arm("xarm_description/urdf/xarm7.urdf", "link_eef"),
}

ROBOT_DATA = Path("share") / "example-robot-data" / "robots"


def robot_data_dirs() -> list[Path]:
    """Folders that may hold example-robot-data's robots/: pip (cmeel) and ROS installs."""
    # The pip wheel installs under <site-packages>/cmeel.prefix; ROS installs under a prefix
    # listed in AMENT_PREFIX_PATH.
    roots = [Path(p) / "cmeel.prefix" for p in sys.path if p]
    roots += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots.append(Path(sys.prefix))
    return [root / ROBOT_DATA for root in roots if (root / ROBOT_DATA).is_dir()]


def arm_urdf(name: str) -> Path:
    """The URDF file of a named arm (see ARMS) from the installed example-robot-data."""
    if name not in ARMS:
        raise KinematicsError(f"unknown arm {name!r}; known arms: {', '.join(sorted(ARMS))}")
    for folder in robot_data_dirs():
        if (urdf := folder / ARMS[name].urdf).is_file():
            return urdf
    raise KinematicsError(
        f"the URDF of {name} ({ARMS[name].urdf}) is not installed; "
        "pip install example-robot-data, or pass the URDF with Kinematics.from_urdf"
    )


def available_arms() -> list[str]:
    """Names of the arms whose URDF is installed."""
    return [
        name for name in ARMS if any((d / ARMS[name].urdf).is_file() for d in robot_data_dirs())
    ]


class Kinematics:
    """FK and Jacobian of one frame of a fixed-base arm whose joints each have one DoF.

    Joint vectors `q` hold one value per joint (rad or m), in `joint_names` order;
    continuous joints take their angle, not pinocchio's (cos, sin) pair.
    """

    def __init__(self, model: pin.Model, ee_frame: str, source: str) -> None:
        """Wrap a pinocchio model; prefer `from_urdf` or `from_robot_name`."""
        self.source = source
        self.model = model
        self.data = model.createData()
        if not model.existFrame(ee_frame):
            frames = ", ".join(name for name in self.frames if name != "universe")
            raise KinematicsError(f"{source}: has no frame {ee_frame!r}; its frames are: {frames}")
        self.ee_frame = ee_frame
        self.frame_id = model.getFrameId(ee_frame)
        joints = list(model.joints)[1:]  # joint 0 is pinocchio's "universe"
        if bad := [n for n, j in zip(model.names[1:], joints, strict=True) if j.nv != 1]:
            raise KinematicsError(
                f"{source}: joints {bad} are not single-DoF (floating, planar or spherical); "
                "only fixed-base arms are supported"
            )
        self.joint_names: tuple[str, ...] = tuple(model.names[1:])
        # Where each joint's value goes in pinocchio's configuration vector, and which joints
        # (continuous ones, nq == 2) store (cos, sin) instead of the angle.
        self._idx_q = np.array([j.idx_q for j in joints])
        self._unbounded = np.array([j.nq == 2 for j in joints])

    @classmethod
    def from_urdf(
        cls, urdf: str | Path, ee_frame: str, locked_joints: Sequence[str] = ()
    ) -> Kinematics:
        """Build from a URDF file path or a robot_description XML string.

        `locked_joints` are held at 0 and dropped from `joint_names` (e.g. gripper fingers).
        """
        text = str(urdf)
        if text.lstrip().startswith("<"):
            source = "robot_description"
            model = _build_model(pin.buildModelFromXML, text, source, text)
        else:
            path = Path(urdf)
            if not path.is_file():
                raise KinematicsError(
                    f"{path}: URDF not found; pass an existing .urdf file or the "
                    "robot_description XML string"
                )
            source = str(path)
            model = _build_model(pin.buildModelFromUrdf, source, source, path)
        if locked_joints:
            if unknown := [n for n in locked_joints if not model.existJointName(n)]:
                raise KinematicsError(
                    f"{source}: cannot lock unknown joints {unknown}; its joints are "
                    f"{list(model.names[1:])}"
                )
            ids = [model.getJointId(n) for n in locked_joints]
            model = pin.buildReducedModel(model, ids, pin.neutral(model))
        return cls(model, ee_frame, source)

    @classmethod
    def from_robot_name(
        cls, name: str, ee_frame: str | None = None, locked_joints: Sequence[str] | None = None
    ) -> Kinematics:
        """Build a named arm (panda, ur5, so101, xarm7) from example-robot-data.

        Defaults: the arm's tool frame and its gripper joints locked (see ARMS).
        """
        urdf = arm_urdf(name)
        arm = ARMS[name]
        return cls.from_urdf(
            urdf,
            arm.ee_frame if ee_frame is None else ee_frame,
            arm.gripper_joints if locked_joints is None else locked_joints,
        )

    @property
    def frames(self) -> list[str]:
        """Names of every frame of the model (links, joints, sensors)."""
        return [f.name for f in self.model.frames]

    def joint_order(self, names: Sequence[str]) -> NDArray[np.intp]:
        """Indices into `names` that give the model's joint order; extra names are ignored."""
        index = {name: i for i, name in enumerate(names)}
        if missing := [n for n in self.joint_names if n not in index]:
            raise KinematicsError(
                f"{self.source}: the joint states lack the model's joints {missing}. They name "
                f"{list(names)}; the URDF has {list(self.joint_names)}. Use the URDF the robot "
                "publishes, or lock the joints it does not report (daptq drift --locked-joints "
                "NAME ..., Kinematics.from_urdf(..., locked_joints=[...]))"
            )
        return np.array([index[n] for n in self.joint_names], dtype=np.intp)

    def q_from_joint_state(self, names: Sequence[str], positions: ArrayLike) -> NDArray[np.float64]:
        """JointState names and positions ([J] or [N, J]) -> q in model order ([nj] or [N, nj])."""
        return np.asarray(positions, dtype=np.float64)[..., self.joint_order(names)]

    def fk(self, q: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Position [3] and quaternion xyzw [4] (w >= 0) of the end-effector frame in the world."""
        return _pose(self._placement(q))

    def transform(self, q: ArrayLike) -> NDArray[np.float64]:
        """The 4x4 homogeneous transform world <- end-effector frame."""
        return np.array(self._placement(q).homogeneous)

    def fk_batch(self, qs: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """FK of each row of `qs` [N, nj]: positions [N, 3] and quaternions xyzw [N, 4]."""
        rows = np.atleast_2d(np.asarray(qs, dtype=np.float64))
        positions = np.empty((len(rows), 3))
        quats = np.empty((len(rows), 4))
        for i, q in enumerate(rows):
            positions[i], quats[i] = self.fk(q)
        return positions, quats

    def jacobian(self, q: ArrayLike) -> NDArray[np.float64]:
        """The 6 x nj frame Jacobian, LOCAL_WORLD_ALIGNED: linear rows, then angular rows."""
        jacobian = pin.computeFrameJacobian(
            self.model,
            self.data,
            self.configuration(q),
            self.frame_id,
            pin.ReferenceFrame.LOCAL_WORLD_ALIGNED,
        )
        # eigenpy hands a 6x1 matrix back as a vector; keep [6, nj] for one-joint models too.
        return np.asarray(jacobian).reshape(6, self.model.nv)

    def configuration(self, q: ArrayLike) -> NDArray[np.float64]:
        """One value per joint -> pinocchio's configuration vector (cos, sin for continuous)."""
        values = np.asarray(q, dtype=np.float64).reshape(-1)
        if values.shape != (len(self.joint_names),):
            raise KinematicsError(
                f"{self.source}: q has {values.size} values but the model has "
                f"{len(self.joint_names)} joints {list(self.joint_names)}"
            )
        config = np.zeros(self.model.nq)
        config[self._idx_q] = np.where(self._unbounded, np.cos(values), values)
        config[self._idx_q[self._unbounded] + 1] = np.sin(values[self._unbounded])
        return config

    def _placement(self, q: ArrayLike) -> pin.SE3:
        pin.forwardKinematics(self.model, self.data, self.configuration(q))
        return pin.updateFramePlacement(self.model, self.data, self.frame_id)


def _pose(placement: pin.SE3) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    quat = np.array(pin.Quaternion(placement.rotation).coeffs())  # x, y, z, w
    # q and -q are the same rotation; one sign makes poses comparable sample to sample.
    return np.array(placement.translation), quat if quat[3] >= 0 else -quat


def _build_model(
    loader: Callable[[str], pin.Model], argument: str, source: str, urdf: str | Path
) -> pin.Model:
    """Run a pinocchio URDF loader; on failure, a KinematicsError with urdfdom's own reason.

    urdfdom prints why it rejects a URDF on stderr and pinocchio only says it is invalid, so
    stderr is captured while loading; `urdf` (the XML or the file) decides the xacro hint.
    """
    failure: Exception | None = None
    with _stderr_lines() as printed:
        try:
            model = loader(argument)
        except (ValueError, RuntimeError) as error:
            failure = error
    if failure is None:
        _echo(printed)
        return model
    errors, other = _urdfdom_errors(printed)
    _echo(other)
    cause = "; ".join(errors) or str(failure)
    fix = (
        "expand the xacro first (xacro robot.urdf.xacro > robot.urdf)"
        if _looks_like_xacro(urdf)
        else "fix that in the URDF"
    )
    raise KinematicsError(f"{source}: not a valid URDF ({cause}); {fix}") from None


@contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 inside the block, as lines."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode(errors="replace").splitlines()


def _echo(lines: Sequence[str]) -> None:
    """Print captured lines back on stderr, so that warnings are not lost."""
    if lines:
        print("\n".join(lines), file=sys.stderr)


def _urdfdom_errors(lines: Sequence[str]) -> tuple[list[str], list[str]]:
    """urdfdom's "Error: ..." messages (without their "at line N in FILE" trailer), the rest."""
    errors: list[str] = []
    other: list[str] = []
    for line in lines:
        if match := re.match(r"\s*Error:\s*(.*)", line):
            errors.append(match[1].strip())
        elif not (errors and re.match(r"\s+at line \d+ in ", line)):
            other.append(line)
    return errors, other


def _looks_like_xacro(urdf: str | Path) -> bool:
    """Whether a URDF file or XML string is xacro: a .xacro name or <xacro:...> tags."""
    if isinstance(urdf, Path):
        if urdf.name.endswith(".xacro"):
            return True
        try:
            urdf = urdf.read_text(errors="replace")
        except OSError:
            return False
    return re.search(r"<\s*xacro:", urdf) is not None
