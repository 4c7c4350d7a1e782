"""The simulated arm: MetaWorld tasks, scripted experts, closed-loop episodes recorded as bags.

Importing this package is light (the task registry only); `sim.env`, `sim.experts`,
`sim.rollout` and `sim.collect` load MuJoCo and MetaWorld.
"""

import os

# MuJoCo picks its GL backend once, when first imported; every sim module imports this package
# first, so the default is set before that. EGL renders offscreen without a display.
os.environ.setdefault("MUJOCO_GL", "egl")
# Without a GPU, EGL renders with Mesa's llvmpipe; its worker threads cost more than they give
# on our tiny frames (two 96 px views: 18.7 ms on the calling thread vs 25.0 ms threaded, on a
# 2-core Xeon), and they contend with the policy's threads.
os.environ.setdefault("LP_NUM_THREADS", "0")

from daptq_ros.sim.tasks import DEFAULT_TASKS, TASKS, TaskSpec, get_task

__all__ = ["DEFAULT_TASKS", "TASKS", "TaskSpec", "get_task"]
