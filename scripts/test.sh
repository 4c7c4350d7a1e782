#!/usr/bin/env bash
# Lint, format check and tests. With ROS 2 sourced (ROS_DISTRO set: source
# ../shared/ros2/env.sh or /opt/ros/<distro>/setup.bash), it first builds both packages with
# a plain `colcon build` and sources the install, so the ROS tests run the real graph;
# without ROS 2 they skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ -n "${ROS_DISTRO:-}" ]; then
  # colcon and the nodes run the venv's Python (ros2 runs the first python3 on PATH).
  export PATH="$PWD/.venv/bin:$PATH" VIRTUAL_ENV="$PWD/.venv"
  python -m colcon build --packages-select daptq_ros_interfaces daptq_ros \
    --event-handlers console_cohesion- summary+
  set +u; source install/setup.bash; set -u
  .venv/bin/python -m pytest -q -m "not ros" "$@"
  # The ROS tests on their own, one line each, so the log shows they ran and none skipped.
  .venv/bin/python -m pytest -v -rs -m ros "$@"
else
  .venv/bin/python -m pytest -q "$@"
fi
