"""Shared test settings: small CPUs, quiet torchao, offscreen rendering, the simulator check."""

import logging
import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MuJoCo fixes its GL backend when first imported, possibly by a test module's importorskip.
os.environ.setdefault("MUJOCO_GL", "egl")
logging.getLogger("torchao").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def sim_renders() -> None:
    """Skip unless MetaWorld, MuJoCo and an offscreen GL backend (EGL) work on this machine."""
    pytest.importorskip("mujoco")
    pytest.importorskip("metaworld")
    from daptq_ros.errors import SimError
    from daptq_ros.sim.env import SimEnv

    try:
        with SimEnv("reach", image_size=16) as env:
            env.reset(0)
    except SimError as error:
        pytest.skip(f"the simulator cannot render here: {error}")
