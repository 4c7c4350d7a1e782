"""daptq_ros: an ament_python ROS 2 package that is also a pip-installable library and CLI."""

import sys
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "daptq_ros"
# pip builds wheels (bdist_wheel, editable_wheel) and puts `daptq` in <venv>/bin itself; colcon
# runs `setup.py install`, whose scripts go to lib/daptq_ros, so bin/daptq forwards to it there.
BUILT_BY_PIP = any(command in sys.argv for command in ("bdist_wheel", "editable_wheel"))

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *([] if BUILT_BY_PIP else [("bin", ["bin/daptq"])]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/bits", glob("config/bits/*.yaml")),
        (f"share/{PACKAGE}/config/robots", glob("config/robots/*.yaml")),
        (f"share/{PACKAGE}/config/mappings", glob("config/mappings/*.yaml")),
        # the embedded models (model directories: safetensors, tokenizer, manifest): each
        # family's default, in end-effector space, pi0 in joint space, pi0 with 50-row chunks
        *[
            (
                f"share/{PACKAGE}/models/{model.name}",
                sorted(str(f) for f in model.iterdir() if f.is_file()),
            )
            for model in sorted(Path("models").iterdir())
            if model.is_dir()
        ],
    ],
    # Runtime dependencies are pinned in the repository's requirements.txt (pip) and declared
    # in package.xml (rosdep); setuptools itself is all ament_python needs here.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="daptq_ros developers",
    maintainer_email="daptq-ros@example.com",
    description="Drift-aware post-training quantization (DA-PTQ) of VLA policies on ROS 2 arms.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "daptq = daptq_ros.cli:main",
            "policy_node = daptq_ros.nodes.policy_node:main",
            "drift_monitor = daptq_ros.nodes.drift_monitor:main",
            "sim_bridge = daptq_ros.nodes.sim_bridge:main",
        ],
    },
)
