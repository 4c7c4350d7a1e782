"""The simulated arm: MetaWorld tasks, scripted experts, closed-loop episodes recorded as bags.

Importing this package is light (the task registry only); `sim.env`, `sim.experts`,
`sim.rollout` and `sim.collect` load MuJoCo and MetaWorld.
"""

import os

# MuJoCo picks its GL backend once, when first imported; every sim module imports this package
# first, so the default is set before that. EGL renders offscreen without a display.
os.environ.setdefault("MUJOCO_GL", "egl")

from daptq_ros.sim.tasks import DEFAULT_TASKS, TASKS, TaskSpec, get_task

__all__ = ["DEFAULT_TASKS", "TASKS", "TaskSpec", "get_task"]
