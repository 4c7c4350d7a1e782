"""The OpenVINO runtime runs the quantizer's exact integer weights, on a pi0 of its own geometry.

Three layers, widths 64 / 32, SigLIP MLP 96, 32 px views, chunk 12, 6-D state and action: no
other test and no embedded model has it. Each bit config is exported and compared with the
simulated policy on the same observation and noise:
- float activations: the whole chunk equal to 1e-5 (the integer weights are exact);
- int8 activations: every quantized layer's runtime arithmetic equal to the simulated one to
  1e-5 on the inputs it really sees, and the chunk within 2e-2. A whole chunk cannot be held to
  1e-5 there: float sums in another order (1e-7) flip single int8 codes, each moving a
  layer's output by one quantization step. The simulated policy itself moves as much when only
  its attention kernel changes (sdpa against eager: up to 6e-3 relative on pi0_default).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pi0_checkpoint import save_tiny_pi0

from daptq_ros.cli import main
from daptq_ros.errors import ConfigError, ModelError
from daptq_ros.policy import openvino_export, runtime_openvino
from daptq_ros.policy.contract import ChunkPrefix
from daptq_ros.policy.quantize import load_policy_with_bits
from daptq_ros.quant.layers import QuantLinear

pytestmark = [pytest.mark.slow]
openvino = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    checkpoint = save_tiny_pi0(
        tmp_path_factory.mktemp("ckpt") / "pi0",
        chunk_size=12,
        layers=3,
        widths=(64, 32),
        vision_mlp=96,
        view=32,
        dims=8,
    )
    out = tmp_path_factory.mktemp("imported") / "model"
    robot = ["--robot", "sawyer_joint_sim"]
    assert main(["import", "--checkpoint", str(checkpoint), *robot, "--out", str(out)]) == 0
    return out


def observations(policy, count: int = 3):
    rng = np.random.default_rng(7)
    height, width = policy.loaded.meta.image_size
    for index in range(count):
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        instruction = ["reach the cup", "push", "open the top drawer slowly"][index % 3]
        yield image, instruction, rng.normal(size=policy.state_dim)


def exported(model_dir: Path, bits: str, out: Path):
    """The simulated policy (set to the runtime's arithmetic) and its exported twin."""
    simulated, _ = load_policy_with_bits(model_dir, bits, deployed=False)
    runtime = openvino_export.export_openvino(simulated, out)
    for name in ("config.json", "daptq.json", "tokenizer.json", "model.safetensors"):
        (out / name).write_bytes((model_dir / name).read_bytes())
    return simulated, runtime_openvino.load_openvino_policy(out, threads=1), runtime


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("bits", ["w4a16", "w8a16"])
def test_float_activation_configs_give_the_simulated_chunk(model_dir, tmp_path, bits):
    simulated, deployed, runtime = exported(model_dir, bits, tmp_path)
    assert runtime["dynamic_quantization_group"] == 0
    # Every quantized layer is in a graph but the last backbone layer's query, output and MLP
    # (only its keys and values are read).
    assert {n.split(".layers.2.")[1] for n in runtime["layers_not_computed"]} == {
        "self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
    }  # fmt: skip
    assert all(".language_model.layers.2." in n for n in runtime["layers_not_computed"])
    containers = {description.split()[0] for description in runtime["layers"].values()}
    assert containers == {"u4" if bits == "w4a16" else "u8"}
    # Loading ran one chunk and released the weight files' pages; chunks are unchanged.
    assert deployed.released_mb > 0
    for image, instruction, state in observations(simulated):
        want = simulated.predict(image, instruction, state, seed=5).actions
        got = deployed.predict(image, instruction, state, seed=5).actions
        assert relative(got, want) < 1e-5
    # Real-time chunking runs on the runtime too (J = I; a "vjp" guide falls back to it), and
    # gives the simulated policy's guided chunk.
    old = simulated.predict(image, instruction, state, seed=9).actions
    prefix = ChunkPrefix(old[3:], delay=4, jacobian="vjp")
    guided = deployed.predict(image, instruction, state, seed=5, prefix=prefix)
    assert guided.guidance == "rtc (identity)"
    identity = ChunkPrefix(old[3:], delay=4)
    want = simulated.predict(image, instruction, state, seed=5, prefix=identity).actions
    assert relative(guided.actions, want) < 1e-5
    assert np.abs(guided.actions[:4] - old[3:7]).mean() < np.abs(got[:4] - old[3:7]).mean()


@pytest.mark.parametrize("bits", ["w4a8", "w8a8"])
def test_int8_activations_compute_the_simulated_arithmetic(model_dir, tmp_path, bits):
    simulated, deployed, runtime = exported(model_dir, bits, tmp_path)
    group = runtime["dynamic_quantization_group"]
    assert group in openvino_export.DYNAMIC_GROUPS
    layers = openvino_export.quantized_layers(simulated.model)
    inputs: dict[str, torch.Tensor] = {}

    def keep_first_input(name: str):
        def hook(_module, args, _output) -> None:
            inputs.setdefault(name, args[0])

        return hook

    hooks = [layer.register_forward_hook(keep_first_input(n)) for n, layer in layers.items()]
    image, instruction, state = next(observations(simulated))
    want = simulated.predict(image, instruction, state, seed=5).actions
    for hook in hooks:
        hook.remove()
    quantized_inputs = 0
    for name in runtime["layers"]:
        layer = layers[name]
        got = run_one_layer(name, layer, inputs[name], group)
        assert relative(got, layer(inputs[name]).numpy()) < 1e-5, name
        quantized_inputs += bool(layer.activation_bits)
    assert quantized_inputs > 0
    got = deployed.predict(image, instruction, state, seed=5).actions
    assert relative(got, want) < 2e-2


def run_one_layer(name: str, layer: QuantLinear, x: torch.Tensor, group: int) -> np.ndarray:
    """The layer alone on the OpenVINO CPU, built as the export builds it."""
    from openvino import opset13 as ops

    source = ops.parameter(list(x.shape), openvino.Type.f32)
    y = ops.matmul(source, openvino_export._integer_weight(name, layer), False, True)
    if layer.bias is not None:
        y = ops.add(y, ops.constant(layer.bias.detach().numpy()))
    properties = {
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(group),
        "INFERENCE_NUM_THREADS": "1",
    }
    compiled = openvino.Core().compile_model(openvino.Model([y], [source]), "CPU", properties)
    return compiled(x.numpy())[0]


def test_configs_the_runtime_cannot_run_as_simulated_are_refused(model_dir):
    simulated, _ = load_policy_with_bits(model_dir, "w4a8", deployed=False)
    layers = list(openvino_export.quantized_layers(simulated.model).values())
    layers[0].activation_bits = None  # int8 activations on some layers only
    with pytest.raises(ConfigError, match="every integer layer or of none"):
        openvino_export.match_runtime_arithmetic(simulated.model)
    layers[0].activation_bits = 4
    with pytest.raises(ConfigError, match="no 4-bit activations"):
        openvino_export.match_runtime_arithmetic(simulated.model)


@pytest.fixture(scope="module")
def demos(tmp_path_factory, sim_renders) -> Path:
    calib = tmp_path_factory.mktemp("demos") / "reach"
    args = ["collect", "--tasks", "reach", "--episodes", "2", "--image-size", "32"]
    assert main([*args, "--control", "joint_position", "--out", str(calib)]) == 0
    return calib


QUANTIZE_SMALL = ["--bins", "1", "--batches", "1", "--batch-size", "2", "--threads", "1"]


def test_a_daptq_map_runs_as_simulated(model_dir, demos, tmp_path):
    """DA-PTQ's mixed map (4-bit, 8-bit and kept layers, W4A8) from `daptq quantize`."""
    out = tmp_path / "daptq"
    args = ["quantize", "--model", str(model_dir), "--calib", str(demos), "--method", "daptq"]
    assert main([*args, *QUANTIZE_SMALL, "--runtime", "openvino", "--out", str(out)]) == 0
    runtime = json.loads((out / "openvino" / "runtime.json").read_text())
    assert runtime["dynamic_quantization_group"] > 0
    simulated, _ = load_policy_with_bits(out, "fp32", deployed=False, runtime="openvino")
    deployed, label = load_policy_with_bits(out, "fp32", runtime="openvino")
    assert label == simulated.bit_config and label.startswith("daptq")
    for image, instruction, state in observations(simulated):
        want = simulated.predict(image, instruction, state, seed=2).actions
        got = deployed.predict(image, instruction, state, seed=2).actions
        assert relative(got, want) < 2e-2


def test_quantize_exports_and_eval_runs_the_artefact(model_dir, demos, tmp_path, capsys):
    out = tmp_path / "quantized"
    args = ["quantize", "--model", str(model_dir), "--calib", str(demos), "--method", "rtn"]
    args += ["--config", "w4a8", *QUANTIZE_SMALL, "--runtime", "openvino"]
    assert main([*args, "--out", str(out)]) == 0
    assert "openvino:" in capsys.readouterr().out
    assert json.loads((out / "openvino" / "runtime.json").read_text())["layers"]
    run = ["eval", "--model", str(out), "--tasks", "reach", "--episodes", "1", "--workers", "0"]
    run += ["--runtime", "openvino", "--threads", "1"]
    assert main([*run, "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["overall"]["episodes"] == 1
    files = runtime_openvino.weight_files(out)
    assert summary["weight_bytes"] == sum(f.stat().st_size for f in files)


def test_the_runtime_loads_without_the_torch_model_code(model_dir, tmp_path):
    """A deployed process holds the runtime, not transformers' modeling code or torchao."""
    out = tmp_path / "w8a8"
    exported(model_dir, "w8a8", out)
    heavy = ["torchao", "transformers.models.pi0.modeling_pi0", "daptq_ros.policy.families"]
    script = (
        "import sys; from daptq_ros.policy.runtime_openvino import load_openvino_policy; "
        f"load_openvino_policy({str(out)!r}, threads=1); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.sim
def test_the_demo_times_the_daptq_model_on_openvino(tmp_path, capsys, sim_renders):
    checkpoint = save_tiny_pi0(tmp_path / "ee_pi0", layers=2, widths=(64, 32), view=32, dims=4)
    model = tmp_path / "model"
    assert main(["import", "--checkpoint", str(checkpoint), "--robot", "sawyer_sim",
                 "--out", str(model)]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["demo", "--model", str(model), "--tasks", "reach", "--episodes", "1"]
    args += ["--calib-episodes", "1", "--kernel-choice", "packed", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "demo"), "--json"]) == 0
    rows = {row["method"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert list(rows) == ["fp32", "bf16", "w4a16", "daptq", "daptq_openvino"]
    exported = rows["daptq_openvino"]
    assert not exported["rolled_out"] and exported["latency_p50_ms"] > 0
    assert exported["average_bits"] == rows["daptq"]["average_bits"]
    assert exported["weight_mb"] < rows["fp32"]["weight_mb"]
    assert "| daptq_openvino | not rolled out |" in (tmp_path / "demo" / "demo.md").read_text()


def test_what_the_export_cannot_carry_is_refused_before_calibration(model_dir, tmp_path, capsys):
    args = ["quantize", "--calib", str(tmp_path / "none"), "--method", "rtn", "--runtime"]
    w4a4 = ["--model", str(model_dir), "--config", "w4a4"]
    assert main([*args, "openvino", *w4a4, "--out", str(tmp_path / "q")]) == 2
    assert "no 4-bit activations" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_an_export_that_cannot_find_a_layers_weight_fails_instead_of_running_garbage(
    model_dir, tmp_path, monkeypatch
):
    """Were a converter to name a layer's weight otherwise, its placeholder would stay in the
    graph and the layer would compute nonsense: the export refuses instead."""
    import re

    simulated, _ = load_policy_with_bits(model_dir, "w4a16", deployed=False)
    monkeypatch.setattr(openvino_export, "PLACEHOLDER_NAME", re.compile(r"^no such name$"))
    with pytest.raises(ModelError, match="weight placeholders were not replaced"):
        openvino_export.export_openvino(simulated, tmp_path)
