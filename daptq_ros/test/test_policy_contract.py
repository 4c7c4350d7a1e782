"""The Policy contract: ActionChunk validation and the input checks every policy applies."""

import subprocess
import sys

import numpy as np
import pytest

from daptq_ros.errors import DaptqError, PolicyError
from daptq_ros.policy import ActionChunk
from daptq_ros.policy.contract import check_image, check_instruction, check_state

NAMES = ("dx", "dy", "dz", "gripper")


def test_action_chunk_holds_a_read_only_float32_copy():
    source = np.zeros((8, 4), dtype=np.float64)
    chunk = ActionChunk(source, 0.05, "ee_delta", NAMES)
    source[0, 0] = 1.0
    assert chunk.actions.dtype == np.float32 and chunk.actions[0, 0] == 0.0
    assert chunk.horizon == 8 and chunk.names == NAMES
    with pytest.raises(ValueError):
        chunk.actions[0, 0] = 2.0


@pytest.mark.parametrize(
    ("actions", "dt", "space", "names", "message"),
    [
        (np.zeros(4), 0.05, "ee_delta", NAMES, "shape"),
        (np.zeros((0, 4)), 0.05, "ee_delta", NAMES, "shape"),
        (np.full((2, 4), np.nan), 0.05, "ee_delta", NAMES, "NaN"),
        (np.zeros((2, 4)), 0.0, "ee_delta", NAMES, "dt"),
        (np.zeros((2, 4)), 0.05, "ee-delta", NAMES, "unknown"),
        (np.zeros((2, 4)), 0.05, "ee_delta", NAMES[:3], "names"),
        (np.zeros((2, 4)), 0.05, "ee_delta", ("a", "a", "b", "c"), "names"),
    ],
)
def test_action_chunk_rejects_invalid_chunks(actions, dt, space, names, message):
    with pytest.raises(PolicyError, match=message):
        ActionChunk(actions, dt, space, names)


def test_policy_error_is_a_daptq_error():
    assert issubclass(PolicyError, DaptqError)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((8, 8), dtype=np.uint8), "HxWx3"),
        (np.zeros((8, 8, 4), dtype=np.uint8), "HxWx3"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_check_image_names_the_problem(image, message):
    with pytest.raises(PolicyError, match=message):
        check_image(image)


def test_check_state_rejects_nan_and_wrong_length():
    assert check_state([1, 2, 3], 3).dtype == np.float32
    with pytest.raises(PolicyError, match=r"NaN or inf at indices \[1\]"):
        check_state(np.array([0.0, np.nan, 1.0]), 3)
    with pytest.raises(PolicyError, match="3 values"):
        check_state(np.zeros(4), 3)


def test_check_instruction_rejects_empty_text():
    with pytest.raises(PolicyError):
        check_instruction("  ")


def test_the_contract_imports_without_torch():
    code = "import sys, daptq_ros.policy; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
