#!/usr/bin/env bash
# Lint, format check and tests (ROS-free; tests needing rclpy skip themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q
