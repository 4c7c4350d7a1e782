"""SimEnv: one MetaWorld task with a visible goal, two fixed cameras and paired seeding.

An episode is defined by (task, seed): `reset(seed)` seeds NumPy's global generator with `seed`
just for MetaWorld's reset (which draws object and goal positions from it) and restores the
caller's generator afterwards, so the same (task, seed) gives the same initial layout, image
and instruction for every policy and in every process, whatever ran before.

Three controls (CONTROLS): MetaWorld's own, a hand displacement per step; targets of the seven
arm joints; and joint deltas (targets = measured joints + action). MetaWorld's Sawyer has no
arm actuators: a mocap body welded to the hand moves it, and the joints follow through the
physics. A joint action is executed where its targets' forward kinematics (this MuJoCo model's)
puts the hand: the step moves the mocap to that point, by at most MetaWorld's per-step limit,
and the hand follows through the weld, so a held target is a setpoint the hand settles at.
Tasks, seeds, contacts and scripted experts stay MetaWorld's, so a joint-space model is scored
on the same episodes as an end-effector one. The redundant elbow is left to the physics, so the
measured joints may differ from the commanded ones (the sim bridge and drift tools see the
measured ones).

The policy sees one image: the `corner` view (flipped, since MetaWorld's corner camera is upside
down) and the `topview`, each S x S, side by side: [S, 2S, 3] uint8 RGB. Rendering is offscreen
with EGL unless MUJOCO_GL says otherwise (daptq_ros.sim sets it before MuJoCo loads).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from numpy.typing import ArrayLike, NDArray

from daptq_ros.bags.state import GRIPPER_JOINTS
from daptq_ros.errors import SimError
from daptq_ros.sim.tasks import TaskSpec, get_task

ACTION_SPACE = "ee_delta"  # MetaWorld: end-effector displacement x, y, z and gripper effort
ACTION_NAMES = ("dx", "dy", "dz", "gripper")
ARM_JOINTS = tuple(f"right_j{i}" for i in range(7))
# How an action drives the arm: MetaWorld's hand displacement; targets of the seven arm joints
# (rad); or their change from the measured joints per step (rad); then the gripper effort.
CONTROLS: dict[str, tuple[str, ...]] = {
    ACTION_SPACE: ACTION_NAMES,
    "joint_position": (*ARM_JOINTS, "gripper"),
    "joint_delta": (*ARM_JOINTS, "gripper"),
}
# Damping (m) and count of the least-squares steps that turn a hand goal into joint targets.
IK_DAMPING = 0.01
IK_ITERATIONS = 3
JOINT_NAMES = ARM_JOINTS + GRIPPER_JOINTS
CAMERAS = ("corner", "topview")
HAND_BODY = "hand"  # its position is MetaWorld's end-effector position (the state's x, y, z)

# The goal site is drawn but tiny (2 px at 96 px) and coloured per task (red reach goal on a red
# robot); one bright, larger marker makes it visible and hides which task the scene is.
GOAL_SITE = "goal"
GOAL_RGBA = (0.1, 1.0, 0.1, 1.0)
GOAL_RADIUS = 0.03  # m

MAX_SEED = 2**32 - 1  # np.random.seed's range
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512  # px; MuJoCo's offscreen buffer is 640 wide


@dataclass(frozen=True)
class Observation:
    """What the arm senses at one step; `privileged` is for scripted experts only."""

    image: NDArray[np.uint8]  # [S, 2S, 3] RGB: corner | topview
    instruction: str
    state: NDArray[np.float64]  # [4]: end-effector x, y, z (m) and gripper opening in [0, 1]
    joint_names: tuple[str, ...]
    joint_positions: NDArray[np.float64]  # [9]: 7 arm joints (rad), 2 finger joints (m)
    ee_position: NDArray[np.float64]  # [3] m, the hand body in the world frame
    ee_quat_xyzw: NDArray[np.float64]  # [4], the hand body's orientation
    time: float  # s since reset
    privileged: NDArray[np.float64]  # MetaWorld's 39-D observation, with object and goal poses


class SimEnv:
    """A MetaWorld task ready for closed-loop episodes; use as a context manager or `close()`.

    Make one at a time per process and close it before making the next: EGL contexts freed
    late by an old renderer leave the new one drawing black frames.
    """

    def __init__(
        self,
        task: str | TaskSpec,
        *,
        image_size: int = 96,
        max_steps: int | None = None,
        antialias: bool = False,
        control: str = ACTION_SPACE,
    ) -> None:
        """Build the task's env and renderer.

        Rendering is aliased by default: MuJoCo's 4x multisampling doubles the cost of a step
        (31.7 vs 13.6 ms at 96 px here). Demonstrations and evaluation must use the same
        setting, so it is not a command-line option.
        """
        self.spec = get_task(task) if isinstance(task, str) else task
        if control not in CONTROLS:
            raise SimError(f"control {control!r} is unknown; use one of {', '.join(CONTROLS)}")
        self.action_space = control
        self.action_names = CONTROLS[control]
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise SimError(
                f"image size {image_size} px is out of range; use {MIN_IMAGE_SIZE} to "
                f"{MAX_IMAGE_SIZE}"
            )
        self.max_steps = self.spec.max_steps if max_steps is None else int(max_steps)
        if self.max_steps < 1:
            raise SimError(f"max_steps is {self.max_steps}; use at least 1")
        self.image_size = image_size
        env = ALL_V3_ENVIRONMENTS[self.spec.env_name]()
        # MetaWorld hides the goal from its observation, and the experts need it; the cached
        # observation space would still clip the goal to 0, so it is dropped to be rebuilt.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)
        # Draw a new layout on every reset, from the global generator (see reset()).
        env._freeze_rand_vec = False
        env._set_task_called = True
        env.max_path_length = self.max_steps
        self._env = env
        self.dt = float(env.dt)  # s, control period: 5 physics steps of 2.5 ms
        model = env.model
        goal_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, GOAL_SITE)
        self._goal_site = goal_site if goal_site >= 0 else None
        if self._goal_site is not None:
            model.site(GOAL_SITE).rgba = GOAL_RGBA
            model.site(GOAL_SITE).size[0] = GOAL_RADIUS
        if not antialias:
            model.vis.quality.offsamples = 0
        self._renderer: mujoco.Renderer | None = None
        try:
            self._renderer = _renderer(model, image_size)
        except SimError:
            self.close()  # a half-built env must not leave a GL context behind either
            raise
        self._qpos = [int(model.joint(name).qposadr[0]) for name in JOINT_NAMES]
        self._arm_dofs = [int(model.joint(name).dofadr[0]) for name in ARM_JOINTS]
        self._hand = model.body(HAND_BODY).id
        self._action_scale = float(env.action_scale)  # m of hand motion per unit of ee_delta
        self._kinematics = mujoco.MjData(model)  # scratch state for forward kinematics
        self.steps = 0
        self._instruction: str | None = None
        self._last_image: NDArray[np.uint8] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of Observation.image: (S, 2S, 3)."""
        return (self.image_size, len(CAMERAS) * self.image_size, 3)

    def reset(self, seed: int) -> Observation:
        """Start the episode (task, seed): the same seed always gives the same initial scene."""
        if not 0 <= int(seed) <= MAX_SEED:
            raise SimError(f"seed {seed} is out of range; use 0 to {MAX_SEED}")
        env = self._open()
        saved = np.random.get_state()
        np.random.seed(int(seed))
        try:
            privileged, _ = env.reset()
        finally:
            np.random.set_state(saved)
        self._place_goal_marker()
        self.steps = 0
        self._instruction = self.spec.instruction(int(seed))
        return self._observe(privileged)

    def step(self, action: ArrayLike, render: bool = True) -> tuple[Observation, bool]:
        """Apply one action of the env's control; the next observation and success.

        ee_delta actions are clipped to [-1, 1]; a joint action moves the hand towards its
        targets' forward kinematics by at most MetaWorld's step (its gripper effort clipped).

        `render=False` skips the cameras (two renders cost ~20x a physics step): the
        observation then carries the last rendered image, as a camera slower than the control
        rate would.
        """
        env = self._open()
        if self._instruction is None:
            raise SimError("the episode has not started; call reset(seed) first")
        if self.steps >= self.max_steps:
            raise SimError(f"the episode reached its {self.max_steps} steps; call reset(seed)")
        command = np.asarray(action, dtype=np.float64).reshape(-1)
        names = self.action_names
        if command.shape != (len(names),) or not np.all(np.isfinite(command)):
            raise SimError(
                f"a {self.action_space} action is {len(names)} finite values "
                f"({', '.join(names)}), got {command.tolist()}"
            )
        if self.action_space != ACTION_SPACE:
            targets = command[:-1]
            if self.action_space == "joint_delta":
                targets = targets + env.data.qpos[self._qpos[: len(ARM_JOINTS)]]
            mocap = env.data.mocap_pos[0]
            displacement = (self.hand_position(targets) - mocap) / self._action_scale
            command = np.append(displacement, command[-1])
        privileged, _, _, _, info = env.step(np.clip(command, -1.0, 1.0))
        self.steps += 1
        return self._observe(privileged, render), bool(info["success"])

    def hand_position(self, arm_joints: ArrayLike) -> NDArray[np.float64]:
        """Forward kinematics: the hand's world position (m) at the seven arm joint positions."""
        data = self._kinematics
        data.qpos[self._qpos[: len(ARM_JOINTS)]] = np.asarray(arm_joints, dtype=np.float64)
        mujoco.mj_kinematics(self._open().model, data)
        return data.xpos[self._hand].copy()

    def from_ee_action(self, observation: Observation, ee_action: ArrayLike) -> NDArray:
        """The action of this env's control that does what an ee_delta action does.

        For joint controls: the joint targets whose forward kinematics is where the ee_delta
        action sends the mocap (MetaWorld moves it from where it is, which the hand trails by
        the weld's lag), found by damped least-squares steps from the measured joints; for
        joint_delta, their change from the measured joints. The gripper effort is the action's.
        Scripted experts demonstrate in joint space through it.
        """
        ee = np.clip(np.asarray(ee_action, dtype=np.float64), -1.0, 1.0)
        if self.action_space == ACTION_SPACE:
            return ee
        env = self._open()
        goal = env.data.mocap_pos[0] + ee[:3] * self._action_scale
        q = observation.joint_positions[: len(ARM_JOINTS)]
        target = q.copy()
        for _ in range(IK_ITERATIONS):
            error = goal - self.hand_position(target)
            jacobian = self._hand_jacobian()
            gram = jacobian @ jacobian.T + IK_DAMPING**2 * np.eye(3)
            target = target + jacobian.T @ np.linalg.solve(gram, error)
        return np.append(target - (q if self.action_space == "joint_delta" else 0.0), ee[3])

    def _hand_jacobian(self) -> NDArray[np.float64]:
        """d hand position / d arm joints [3, 7] at the scratch state hand_position left."""
        model, data = self._open().model, self._kinematics
        mujoco.mj_comPos(model, data)
        jacobian = np.zeros((3, model.nv))
        mujoco.mj_jacBody(model, data, jacobian, None, self._hand)
        return jacobian[:, self._arm_dofs]

    def close(self) -> None:
        """Free the renderer and the env, then collect garbage so no EGL context outlives them."""
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()
        env, self._env = self._env, None
        if env is not None:
            env.close()
        gc.collect()

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> Any:
        """The MetaWorld env (its classes are untyped); a SimError once closed."""
        if self._env is None:
            raise SimError("the SimEnv is closed; make a new one")
        return self._env

    def _place_goal_marker(self) -> None:
        """Put the goal marker where reset() put the goal, for the first frame.

        MetaWorld moves the goal site after its last forward pass, so the first frame would draw
        it where the previous episode had it. A full forward pass would also move the hand by
        ~0.1 mm away from the state MetaWorld returned; only the marker's world position is set.
        """
        if self._goal_site is None:
            return
        model, data = self._open().model, self._open().data
        body = model.site_bodyid[self._goal_site]
        rotation = data.xmat[body].reshape(3, 3)
        data.site_xpos[self._goal_site] = (
            data.xpos[body] + rotation @ model.site_pos[self._goal_site]
        )

    def _observe(self, privileged: NDArray[np.float64], render: bool = True) -> Observation:
        data = self._open().data
        assert self._instruction is not None
        if render or self._last_image is None:
            self._last_image = self._render()
        return Observation(
            image=self._last_image,
            instruction=self._instruction,
            state=np.array(privileged[:4], dtype=np.float64),
            joint_names=JOINT_NAMES,
            joint_positions=data.qpos[self._qpos].copy(),
            ee_position=data.xpos[self._hand].copy(),
            ee_quat_xyzw=data.xquat[self._hand][[1, 2, 3, 0]].copy(),
            time=self.steps * self.dt,
            privileged=np.array(privileged, dtype=np.float64),
        )

    def _render(self) -> NDArray[np.uint8]:
        assert self._renderer is not None
        views = []
        for camera in CAMERAS:
            self._renderer.update_scene(self._open().data, camera=camera)
            views.append(self._renderer.render())
        views[0] = views[0][::-1]  # the corner camera is mounted upside down
        image = np.concatenate(views, axis=1)
        if not image.any():
            raise SimError(
                "the camera image is black: an earlier env's GL context was freed under this "
                "one; close every SimEnv before making the next"
            )
        return image


def _renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """An offscreen renderer of size x size pixels without shadows, reflections or skybox."""
    try:
        renderer = mujoco.Renderer(model, size, size)
    except Exception as error:  # MuJoCo raises several kinds when no GL backend loads
        backend = os.environ.get("MUJOCO_GL", "")
        raise SimError(
            f"cannot render offscreen with MUJOCO_GL={backend} ({error}); use MUJOCO_GL=egl "
            "(Debian package libegl1) or MUJOCO_GL=osmesa (libosmesa6)"
        ) from error
    flags = mujoco.mjtRndFlag
    for flag in (flags.mjRND_SHADOW, flags.mjRND_REFLECTION, flags.mjRND_SKYBOX):
        renderer.scene.flags[flag] = 0
    return renderer
