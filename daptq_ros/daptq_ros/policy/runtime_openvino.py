"""The OpenVINO runtime: a quantized pi0 exported with its exact integer weights, and run.

Export (`export_openvino`): the whole `sample_actions` (prefix pass, KV cache, every flow step)
is converted by OpenVINO's PyTorch frontend. Each quantized Linear enters the graph as the
chain OpenVINO's CPU plugin fuses into one compressed fully-connected layer:

    Constant(u4 | u8 codes [out, groups, group]) -> Convert -> Subtract(Constant(u4 | u8 zero))
      -> Multiply(Constant(f32 scale)) -> Reshape([out, in]) -> MatMul(x, transposed)

so the runtime executes the codes, scales and zero points the quantizer wrote (2-4 bit codes in
the u4 container, 5-8 bit in u8, CSRC already folded into scale and bias), never re-quantized.
Kept (16-bit) layers and everything else stay float32.

Activations: OpenVINO quantizes an int8-activation layer's inputs itself, symmetric per
(token, group) with s = max|x| / 127; the group is one value for the whole model
(DYNAMIC_QUANTIZATION_GROUP_SIZE), chosen to reach the most layers. `match_runtime_arithmetic` sets
the same arithmetic on the simulated QuantLinears, so `daptq eval` of the simulated model
evaluates what this runtime runs.

Files next to the model directory's weights: `openvino/model.xml`, `model.bin`, `runtime.json`.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from daptq_ros.errors import ConfigError, ModelError
from daptq_ros.policy.contract import ActionChunk
from daptq_ros.policy.inference import VlaPolicy
from daptq_ros.quant.layers import QuantLinear

RUNTIME_DIR = "openvino"
MODEL_FILE = "model.xml"
RUNTIME_FILE = "runtime.json"
DYNAMIC_GROUPS = (128, 64, 32, 16)  # activation groups tried, per token row
INPUT_NAMES = ("pixel_values", "input_ids", "attention_mask", "state", "noise")
WEIGHT_BUFFER = "dequantized"  # an exported weight's buffer; the converter names it
TRACED_PREFIX = "self.model."  # self.model.<layer>.dequantized (SampleActions holds the model)


def weight_group(layer: QuantLinear) -> int:
    """The number of input channels that share one scale."""
    return layer.fmt.group_size if layer.fmt.granularity == "group" else layer.in_features


def quantized_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """The model's QuantLinears by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def match_runtime_arithmetic(model: nn.Module) -> dict[str, Any]:
    """Make the simulated QuantLinears compute what OpenVINO computes; returns its settings.

    Every int8-activation layer gets OpenVINO's activation groups. A config OpenVINO cannot run
    as simulated is refused with the reason: 4-bit activations, or int8 activations on some
    quantized layers and not on others (its dynamic quantization is one switch per model).
    """
    layers = quantized_layers(model)
    bits = {layer.activation_bits for layer in layers.values()}
    if 4 in bits:
        raise ConfigError(
            "OpenVINO has no 4-bit activations: quantize with activation_bits 8 or null"
        )
    if len(bits) > 1:
        raise ConfigError(
            "OpenVINO quantizes the activations of every integer layer or of none; this bit "
            "config mixes int8 and float activations: give every quantized layer the same "
            "activation_bits"
        )
    quantizes = bits == {8}
    group = _dynamic_group(list(layers.values())) if quantizes else 0
    float_inputs = []
    for name, layer in layers.items():
        runs_int8 = quantizes and _quantizes_inputs(layer, group)
        layer.activation_group = group if runs_int8 else None
        if quantizes and not runs_int8:
            layer.activation_bits = None  # the runtime leaves this layer's inputs in float
            float_inputs.append(name)
    return {"dynamic_quantization_group": group, "float_activation_layers": float_inputs}


def _quantizes_inputs(layer: QuantLinear, group: int) -> bool:
    """Whether OpenVINO's CPU quantizes this layer's inputs with the model-wide `group`: only
    when the group divides its weight group (measured: it leaves the others in float)."""
    return weight_group(layer) % group == 0 and layer.in_features % group == 0


def _dynamic_group(layers: list[QuantLinear]) -> int:
    """The model-wide activation group: of the groups the CPU takes (multiples of 16, at most
    128), the one that reaches the most layers, the largest on a tie (fewer scales)."""
    return max(
        DYNAMIC_GROUPS,
        key=lambda g: (sum(_quantizes_inputs(layer, g) for layer in layers), g),
    )


class ExportLinear(nn.Module):
    """A QuantLinear for tracing: its dequantized weight as a named buffer, replaced after
    conversion by the integer chain (the buffer's name locates it in the converted graph)."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self.register_buffer(WEIGHT_BUFFER, layer.dequantized_weight().float())
        self.register_buffer("input_scale", layer.input_scale)
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale
        return F.linear(x, getattr(self, WEIGHT_BUFFER), self.bias)


class SampleActions(nn.Module):
    """pi0's sample_actions with tensor inputs only (what the converter traces)."""

    def __init__(self, model: nn.Module, num_steps: int) -> None:
        super().__init__()
        self.model = model
        self.num_steps = num_steps

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        views = torch.ones(pixel_values.shape[:2], dtype=torch.bool)
        return self.model.sample_actions(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_attention_mask=views,
            state=state,
            noise=noise,
            num_steps=self.num_steps,
        )


@contextlib.contextmanager
def _swapped_for_export(model: nn.Module) -> Iterator[dict[str, QuantLinear]]:
    """QuantLinears replaced by ExportLinears while inside; the originals are put back after."""
    layers = quantized_layers(model)
    for name, layer in layers.items():
        model.set_submodule(name, ExportLinear(layer))
    try:
        yield layers
    finally:
        for name, layer in layers.items():
            model.set_submodule(name, layer)


@contextlib.contextmanager
def _traceable_cache() -> Iterator[None]:
    """transformers' DynamicLayer starts its cache as a rank-1 empty tensor and concatenates
    keys to it along dim -2: eager skips the empty tensor, a traced graph does not. Inside,
    the cache starts from an empty slice of the first keys instead (same values)."""
    from transformers import cache_utils

    original = cache_utils.DynamicLayer.lazy_initialization

    def lazy_initialization(
        self: Any, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> None:
        original(self, key_states, value_states, *args, **kwargs)
        self.keys = key_states[..., :0, :]
        self.values = value_states[..., :0, :]

    cache_utils.DynamicLayer.lazy_initialization = lazy_initialization
    try:
        yield
    finally:
        cache_utils.DynamicLayer.lazy_initialization = original


def _integer_weight(name: str, layer: QuantLinear) -> Any:
    """The OpenVINO chain that computes `layer`'s float weight from its stored integers."""
    import openvino as ov
    from openvino import opset13 as ops

    out_features, in_features = layer.codes.shape
    if layer.scale.shape[0] != out_features:
        raise ModelError(f"scales of shape {tuple(layer.scale.shape)}: not one row per output")
    groups = layer.scale.numel() // out_features
    container = ov.Type.u4 if layer.fmt.bits <= 4 else ov.Type.u8
    codes = layer.codes.reshape(out_features, groups, in_features // groups).numpy()
    zero = layer.zero.reshape(out_features, groups, 1).round().to(torch.uint8).numpy()
    scale = layer.scale.reshape(out_features, groups, 1).float().numpy()
    weight = ops.multiply(
        ops.subtract(
            ops.convert(ops.constant(codes, container), ov.Type.f32),
            ops.convert(ops.constant(zero, container), ov.Type.f32),
        ),
        ops.constant(scale),
    )
    shape = ops.constant(np.array([out_features, in_features], np.int64))
    weight = ops.reshape(weight, shape, special_zero=False)
    weight.set_friendly_name(f"{name}/weight")
    return weight.output(0)


def _insert_integer_weights(ov_model: Any, layers: dict[str, QuantLinear]) -> list[str]:
    """Replace each exported float weight by its integer chain; returns the quantized layers
    absent from the graph. A layer whose output sample_actions never reads (the backbone's
    last MLP: only its keys and values are cached) is dropped by the converter, rightly."""
    found = set()
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() != "Constant" or not name.endswith("." + WEIGHT_BUFFER):
            continue
        layer_name = name.removeprefix(TRACED_PREFIX).removesuffix("." + WEIGHT_BUFFER)
        if layer_name not in layers:
            raise ModelError(f"OpenVINO export: weight {name} matches no quantized layer")
        op.output(0).replace(_integer_weight(layer_name, layers[layer_name]))
        found.add(layer_name)
    return sorted(set(layers) - found)


def _example_inputs(policy: VlaPolicy, config: Any) -> dict[str, torch.Tensor]:
    """A probe observation as the model's tensor inputs (the shapes the converter traces)."""
    meta = policy.loaded.meta
    blank = np.zeros((*meta.image_size, 3), np.uint8)
    batch = policy.preprocess(blank, "probe", np.zeros(policy.state_dim))
    inputs = policy.loaded.adapter._inputs(policy.model, batch)
    noise = torch.zeros(1, config.chunk_size, config.max_action_dim)
    return {name: inputs[name] for name in INPUT_NAMES[:-1]} | {"noise": noise}


def export_openvino(policy: VlaPolicy, directory: str | Path) -> dict[str, Any]:
    """Convert a quantized (simulated) pi0 policy to `directory`/openvino; returns runtime.json.

    The policy's QuantLinears are set to the runtime's activation arithmetic first (see
    match_runtime_arithmetic), so the simulated policy and the artefact compute the same chunk.
    """
    import openvino as ov

    if policy.loaded.meta.family != "pi0":
        raise ConfigError(
            f"the OpenVINO runtime exports pi0 models; this one is {policy.loaded.meta.family}: "
            "run it with --runtime torch"
        )
    model = policy.model.float().eval()
    settings = match_runtime_arithmetic(model)
    num_steps = policy.num_steps or model.config.num_inference_steps
    example = _example_inputs(policy, model.config)
    started = time.perf_counter()
    with (
        _traceable_cache(),
        _swapped_for_export(model) as layers,
        torch.no_grad(),
        warnings.catch_warnings(),  # the tracer's notes on shape-dependent Python branches
    ):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ov_model = ov.convert_model(SampleActions(model, num_steps), example_input=example)
    unused = _insert_integer_weights(ov_model, layers)
    for port, name in zip(ov_model.inputs, INPUT_NAMES, strict=True):
        port.get_tensor().set_names({name})
    out = Path(directory) / RUNTIME_DIR
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, out / MODEL_FILE, compress_to_fp16=False)
    runtime = {
        "runtime": "openvino",
        "openvino": ov.__version__,
        "num_steps": num_steps,
        **settings,
        "layers": {name: describe(layer) for name, layer in layers.items() if name not in unused},
        "layers_not_computed": unused,
        "export_s": round(time.perf_counter() - started, 1),
    }
    (out / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")
    return runtime


def describe(layer: QuantLinear) -> str:
    """How the runtime holds one layer, e.g. 'u4 W3 asym g64, int8 activations g64'."""
    container = "u4" if layer.fmt.bits <= 4 else "u8"
    acts = f", int8 activations g{layer.activation_group}" if layer.activation_bits else ""
    return f"{container} {layer.fmt.describe()}{acts}"


def has_openvino_artefact(directory: str | Path) -> bool:
    """Whether `directory` holds an exported OpenVINO model."""
    return (Path(directory) / RUNTIME_DIR / RUNTIME_FILE).is_file()


class OpenVinoPolicy(VlaPolicy):
    """The Policy contract on an exported OpenVINO model (the torch model is never built).

    Pre- and post-processing are VlaPolicy's; the noise is drawn as VlaPolicy draws it, so the
    same observation and seed give the simulated policy's chunk.
    """

    runtime = "openvino"

    def __init__(self, loaded: Any, directory: Path, threads: int | None, seed: int = 0) -> None:
        import openvino as ov

        self.loaded, self.device, self.seed = loaded, torch.device("cpu"), seed
        self.settings = json.loads((directory / RUNTIME_FILE).read_text())
        self.num_steps = self.settings["num_steps"]
        properties = {
            "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(self.settings["dynamic_quantization_group"]),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            properties["INFERENCE_NUM_THREADS"] = str(threads)
        started = time.perf_counter()
        self.compiled = ov.Core().compile_model(str(directory / MODEL_FILE), "CPU", properties)
        self.compile_s = time.perf_counter() - started
        self.weight_bytes = (directory / MODEL_FILE).with_suffix(".bin").stat().st_size
        self.request = self.compiled.create_infer_request()

    @property
    def model(self) -> Any:
        """A stand-in holding the config (the adapter reads shapes from it)."""
        return self.loaded.model

    def sample(self, batch: Any, seed: int) -> np.ndarray:
        """Normalised actions [chunk, action_dim] of one preprocessed observation."""
        adapter, config = self.loaded.adapter, self.loaded.model.config
        inputs = adapter._inputs(self.loaded.model, batch)
        generator = torch.Generator().manual_seed(seed)
        shape = (1, config.chunk_size, config.max_action_dim)
        inputs["noise"] = torch.randn(shape, generator=generator)
        feed = {name: inputs[name].numpy() for name in INPUT_NAMES}
        actions = self.request.infer(feed)[0][0, :, : adapter._action_dim(self.loaded.model)]
        return np.asarray(actions, np.float32)

    def predict(
        self, image: np.ndarray, instruction: str, state: np.ndarray, seed: int | None = None
    ) -> ActionChunk:
        batch = self.preprocess(image, instruction, state)
        actions = self.sample(batch, self.seed if seed is None else seed)
        meta = self.loaded.meta
        return ActionChunk(
            meta.normalizer.unnormalize_actions(actions),
            meta.dt,
            meta.action_space,
            meta.action_names,
        )


def load_openvino_policy(
    directory: str | Path, threads: int | None = None, seed: int = 0
) -> OpenVinoPolicy:
    """The OpenVinoPolicy of a model directory that `daptq quantize --runtime openvino` wrote."""
    from types import SimpleNamespace

    from transformers import PI0Config

    from daptq_ros.policy.families import get_family
    from daptq_ros.policy.model_dir import LoadedModel, read_model_files

    directory = Path(directory)
    if not has_openvino_artefact(directory):
        raise ModelError(
            f"{directory} has no {RUNTIME_DIR}/{RUNTIME_FILE}: export it with "
            "`daptq quantize --runtime openvino`, or run it with --runtime torch"
        )
    meta, config, tokenizer = read_model_files(directory)
    stand_in = SimpleNamespace(config=PI0Config.from_dict(config))
    loaded = LoadedModel(stand_in, get_family(meta.family), config, tokenizer, meta)  # type: ignore[arg-type]
    return OpenVinoPolicy(loaded, directory / RUNTIME_DIR, threads, seed)
