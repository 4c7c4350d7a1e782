"""The OpenVINO runtime on a cogact of its own geometry, with classifier-free guidance on.

Two backbone layers 48 wide, a three-block DiT head 64 wide, three cognition tokens, 5-step
chunks of 2-D actions, guidance 1.5 (the head runs on a batch of two): unlike the embedded
cogact_default and the bench's large preset. Each bit config is exported and compared with
the simulated policy on the same observation and noise, as test_runtime_openvino does for pi0.
"""

from __future__ import annotations

import numpy as np
import pytest
from policy_data import HORIZON, synthetic_episodes
from test_runtime_openvino import observations, relative

from daptq_ros.policy import TrainConfig, openvino_export, runtime_openvino, train
from daptq_ros.policy.quantize import load_policy_with_bits

pytestmark = [pytest.mark.slow]
openvino = pytest.importorskip("openvino")

GEOMETRY = {
    "hidden_size": 48,
    "num_layers": 2,
    "num_heads": 3,
    "intermediate_size": 96,
    "head_hidden_size": 64,
    "head_layers": 3,
    "head_heads": 4,
    "cognition_tokens": 3,
    "guidance_scale": 1.5,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = TrainConfig(
        family="cogact",
        dt=0.05,
        action_names=("dx", "gripper"),
        size="tiny",
        model_overrides=GEOMETRY,
        horizon=HORIZON + 1,
        steps=2,
        batch_size=4,
        warmup_steps=1,
        max_text_length=8,
    )
    out = tmp_path_factory.mktemp("cogact") / "model"
    return train(synthetic_episodes(2, length=6), out, config, progress=False).model_dir


def exported(model_dir, bits, out):
    simulated, _ = load_policy_with_bits(model_dir, bits, deployed=False)
    runtime = openvino_export.export_openvino(simulated, out)
    for name in ("config.json", "daptq.json", "tokenizer.json", "model.safetensors"):
        (out / name).write_bytes((model_dir / name).read_bytes())
    return simulated, runtime_openvino.load_openvino_policy(out, threads=1), runtime


@pytest.mark.parametrize("bits", ["w4a16", "w8a16"])
def test_float_activation_configs_give_the_simulated_chunk(model_dir, tmp_path, bits):
    simulated, deployed, runtime = exported(model_dir, bits, tmp_path)
    assert runtime["family"] == "cogact" and runtime["guidance_scale"] == 1.5
    # Every quantized layer of backbone and head is computed by one of the two graphs.
    assert runtime["layers_not_computed"] == []
    assert any(name.startswith("action_head.blocks.2.") for name in runtime["layers"])
    assert runtime["num_steps"] == simulated.model.config.sample_steps
    for image, instruction, state in observations(simulated):
        want = simulated.predict(image, instruction, state, seed=4).actions
        got = deployed.predict(image, instruction, state, seed=4).actions
        assert got.shape == (HORIZON + 1, 2)
        assert relative(got, want) < 1e-5


def test_int8_activations_give_the_simulated_chunk_within_a_step_of_rounding(model_dir, tmp_path):
    simulated, deployed, runtime = exported(model_dir, "w8a8", tmp_path)
    assert runtime["dynamic_quantization_group"] > 0
    for image, instruction, state in observations(simulated):
        want = simulated.predict(image, instruction, state, seed=4).actions
        got = deployed.predict(image, instruction, state, seed=4).actions
        assert relative(got, want) < 2e-2


def test_a_seed_changes_the_chunk_as_in_torch(model_dir, tmp_path):
    simulated, deployed, _ = exported(model_dir, "w8a16", tmp_path)
    image, instruction, state = next(observations(simulated))
    chunks = [deployed.predict(image, instruction, state, seed=s).actions for s in (1, 2)]
    assert not np.allclose(chunks[0], chunks[1])
    assert relative(chunks[1], simulated.predict(image, instruction, state, seed=2).actions) < 1e-5
