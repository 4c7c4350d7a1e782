"""Export a quantized pi0 to OpenVINO with its exact integer weights (`--runtime openvino`).

Two graphs, converted by OpenVINO's PyTorch frontend, and the flow loop kept in Python (as
pi0's own `sample_actions` runs it): `prefix.xml` (images + prompt -> the backbone's keys and
values per layer) and `step.xml` (state, noisy actions, time, the cached keys and values ->
velocity). Each flow step runs the same compiled step graph, so the action expert's weights
are held once. Each quantized Linear enters a graph as the chain OpenVINO's CPU plugin fuses
into one compressed fully-connected layer:

    Constant(u4 | u8 codes [out, groups, group]) -> Convert -> Subtract(Constant(u4 | u8 zero))
      -> Multiply(Constant(f32 scale)) -> Reshape([out, in]) -> MatMul(x, transposed)

so the runtime executes the codes, scales and zero points the quantizer wrote (2-4 bit codes in
the u4 container, 5-8 bit in u8, CSRC already folded into scale and bias), never re-quantized.
Kept (16-bit) layers and everything else stay float32.

Activations: OpenVINO quantizes an int8-activation layer's inputs itself, symmetric per
(token, group) with s = max|x| / 127; the group is one value for the whole model
(DYNAMIC_QUANTIZATION_GROUP_SIZE), chosen to reach the most layers. `match_runtime_arithmetic`
sets the same arithmetic on the simulated QuantLinears, so `daptq eval` of the simulated model
evaluates what this runtime runs.
"""

from __future__ import annotations

import contextlib
import json
import re
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
from daptq_ros.policy.inference import VlaPolicy
from daptq_ros.policy.runtime_openvino import (
    PREFIX_FILE,
    PREFIX_INPUTS,
    RUNTIME_DIR,
    RUNTIME_FILE,
    STEP_FILE,
    STEP_INPUTS,
    cache_names,
)
from daptq_ros.quant.layers import QuantLinear

DYNAMIC_GROUPS = (128, 64, 32, 16)  # activation groups tried, per token row
WEIGHT_BUFFER = "placeholder"  # ExportLinear's one-element stand-in for its weight
# The converter names ExportLinear's weight after its module (the graph modules hold `model`);
# one per use of the layer in a graph: ..._1, _2.
PLACEHOLDER_NAME = re.compile(r"^__module\.model\.(?P<layer>.+)/aten::expand/Broadcast(_\d+)?$")


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
        check_exportable("pi0", 4)
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
    """A QuantLinear for tracing: a one-element placeholder broadcast to the weight's shape;
    after conversion that weight (found by its module's name) is replaced by the integer chain.
    No float copy of the weights is made, so a 3 G model exports in the memory of its
    integers; the traced values are meaningless, the shapes are the layer's."""

    def __init__(self, layer: QuantLinear, index: int) -> None:
        super().__init__()
        # A value of its own per layer: layers reading the same input (q/k/v, gate/up) would
        # otherwise give identical subgraphs, which the converter merges into one.
        self.register_buffer(WEIGHT_BUFFER, torch.full((1, 1), 1e-6 * (index + 1)))
        self.register_buffer("input_scale", layer.input_scale)
        self.bias = layer.bias
        self.shape = (layer.out_features, layer.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale
        # + 0 x (one input element) before the broadcast: the weight depends on an input, so
        # the converter keeps Add -> Broadcast instead of folding a dense float constant.
        anchor = x.flatten()[:1].sum() * 0.0
        weight = (getattr(self, WEIGHT_BUFFER) + anchor).expand(self.shape)
        return F.linear(x, weight, self.bias)


class PrefixCache(nn.Module):
    """Images and prompt -> the backbone's keys and values of every layer (pi0's step 2)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        inner = self.model.model
        views = torch.ones(pixel_values.shape[:2], dtype=torch.bool)
        embeds = inner.embed_prefix(input_ids, pixel_values, views)
        cache = inner.vlm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=attention_mask.cumsum(-1) - 1,
            token_type_ids=torch.zeros_like(embeds)[:, :, 0],
            use_cache=True,
        ).cache
        return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))


class DenoiseStep(nn.Module):
    """One flow step: state, noisy actions, time and the prefix's keys and values -> velocity
    (pi0's step 3 without the update, which the runtime does as sample_actions does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        state: torch.Tensor,
        noise: torch.Tensor,
        timestep: torch.Tensor,
        attention_mask: torch.Tensor,
        *cache: torch.Tensor,
    ) -> torch.Tensor:
        from transformers import DynamicCache

        prefix = DynamicCache(ddp_cache_data=list(zip(cache[0::2], cache[1::2], strict=True)))
        return self.model(
            state=state,
            noise=noise,
            timestep=timestep,
            attention_mask=attention_mask,
            cache=prefix,
        ).logits


@contextlib.contextmanager
def _swapped_for_export(model: nn.Module) -> Iterator[dict[str, QuantLinear]]:
    """QuantLinears replaced by ExportLinears while inside; the originals are put back after."""
    layers = quantized_layers(model)
    for index, (name, layer) in enumerate(layers.items()):
        model.set_submodule(name, ExportLinear(layer, index))
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


def _insert_integer_weights(ov_model: Any, layers: dict[str, QuantLinear]) -> set[str]:
    """Replace each exported placeholder weight of one graph (the Broadcast of
    ExportLinear.forward, named after its module) by the layer's integer chain; the layers
    found. A layer whose output no graph reads is dropped by the converter, rightly."""
    found = set()
    for op in ov_model.get_ordered_ops():
        match = PLACEHOLDER_NAME.match(op.get_friendly_name())
        layer_name = match["layer"] if match else ""
        if op.get_type_name() != "Broadcast" or layer_name not in layers:
            continue  # a broadcast of another module
        op.output(0).replace(_integer_weight(layer_name, layers[layer_name]))
        found.add(layer_name)
    left = [
        op.get_friendly_name()
        for op in ov_model.get_ordered_ops()
        if op.get_friendly_name().endswith("." + WEIGHT_BUFFER)
    ]
    if left:  # a placeholder still feeds the graph: its layer would compute garbage
        raise ModelError(
            f"OpenVINO export: {len(left)} weight placeholders were not replaced ({left[0]}); "
            "this OpenVINO version names converted layers differently"
        )
    return found


def _example_inputs(policy: VlaPolicy) -> dict[str, torch.Tensor]:
    """A probe observation as the prefix graph's inputs (the shapes the converter traces)."""
    meta = policy.loaded.meta
    blank = np.zeros((*meta.image_size, 3), np.uint8)
    batch = policy.preprocess(blank, "probe", np.zeros(policy.state_dim))
    inputs = policy.loaded.adapter._inputs(policy.model, batch)
    return {name: inputs[name] for name in PREFIX_INPUTS} | {"state": inputs["state"]}


def _convert(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str]) -> Any:
    """One graph converted, its inputs named (the tracer's notes on shape-dependent Python
    branches are silenced: the exported graphs are checked against torch by the tests)."""
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(module, example_input=example)
    for port, name in zip(converted.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    return converted


def _fix_batch_one(graph: Any, example: tuple[torch.Tensor, ...]) -> None:
    """Make every input's shape static (batch 1, as the robot runs) except the prompt's length:
    the token and mask columns and the cache's sequence axis. Static shapes let the CPU plugin
    choose its kernels at compile time (a flow step 10-15 % faster than fully dynamic)."""
    import openvino as ov

    shapes = {}
    for port, tensor in zip(graph.inputs, example, strict=True):
        name = port.get_any_name()
        shape = list(tensor.shape)
        if name in ("input_ids", "attention_mask"):
            shape[1] = -1
        elif name.startswith(("key_", "value_")):
            shape[2] = -1
        shapes[name] = ov.PartialShape(shape)
    graph.reshape(shapes)


def check_exportable(family: str, activation_bits: int | None) -> None:
    """Refuse, before any calibration, what the export cannot carry: a family other than pi0
    or 4-bit activations."""
    if family != "pi0":
        raise ConfigError(
            f"the OpenVINO runtime exports pi0 models; this one is {family}: run it with "
            "--runtime torch"
        )
    if activation_bits == 4:
        raise ConfigError(
            "OpenVINO has no 4-bit activations: quantize with activation_bits 8 or null"
        )


def export_openvino(policy: VlaPolicy, directory: str | Path) -> dict[str, Any]:
    """Convert a quantized (simulated) pi0 policy to `directory`/openvino; returns runtime.json.

    The policy's QuantLinears are set to the runtime's activation arithmetic first (see
    match_runtime_arithmetic), so the simulated policy and the artefact compute the same chunk.
    """
    import openvino as ov

    check_exportable(policy.loaded.meta.family, None)
    model = policy.model.float().eval()
    settings = match_runtime_arithmetic(model)
    config = model.config
    example = _example_inputs(policy)
    started = time.perf_counter()
    with _traceable_cache(), _swapped_for_export(model) as layers:
        prefix = PrefixCache(model)
        prefix_inputs = tuple(example[name] for name in PREFIX_INPUTS)
        with torch.no_grad():
            cache = prefix(*prefix_inputs)  # the step graph's example keys and values
        prefix_graph = _convert(prefix, prefix_inputs, list(PREFIX_INPUTS))
        noise = torch.zeros(1, config.chunk_size, config.max_action_dim)
        step_inputs = (example["state"], noise, torch.ones(1), example["attention_mask"], *cache)
        names = [*STEP_INPUTS, *cache_names(len(cache) // 2)]
        step_graph = _convert(DenoiseStep(model), step_inputs, names)
    _fix_batch_one(prefix_graph, prefix_inputs)
    _fix_batch_one(step_graph, step_inputs)
    found = _insert_integer_weights(prefix_graph, layers) | _insert_integer_weights(
        step_graph, layers
    )
    out = Path(directory) / RUNTIME_DIR
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(prefix_graph, out / PREFIX_FILE, compress_to_fp16=False)
    ov.save_model(step_graph, out / STEP_FILE, compress_to_fp16=False)
    runtime = {
        "runtime": "openvino",
        "openvino": ov.__version__,
        "num_steps": policy.num_steps or config.num_inference_steps,
        "cache_layers": len(cache) // 2,
        **settings,
        "layers": {name: describe(layer) for name, layer in layers.items() if name in found},
        # The backbone's last attention output and MLP: only its keys and values are read.
        "layers_not_computed": sorted(set(layers) - found),
        "export_s": round(time.perf_counter() - started, 1),
    }
    (out / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")
    return runtime


def describe(layer: QuantLinear) -> str:
    """How the runtime holds one layer, e.g. 'u4 W3 asym g64, int8 activations g64'."""
    container = "u4" if layer.fmt.bits <= 4 else "u8"
    acts = f", int8 activations g{layer.activation_group}" if layer.activation_bits else ""
    return f"{container} {layer.fmt.describe()}{acts}"
