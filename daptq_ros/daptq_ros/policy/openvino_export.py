"""Export a quantized pi0 or cogact to OpenVINO with its exact integer weights (`--runtime
openvino`).

Two graphs per model, converted by OpenVINO's PyTorch frontend, the sampling loop kept in Python
(policy/openvino_graphs.py): `prefix.xml` (once per chunk: images + prompt -> what the action
head reads) and `step.xml` (one denoising step). Every step runs the same compiled step graph,
so the action head's weights are held once. Inputs are static (batch 1) but for the prompt's
length. Each quantized Linear enters a graph as the chain OpenVINO's CPU plugin fuses
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
from daptq_ros.policy.runtime_openvino import PREFIX_FILE, RUNTIME_DIR, RUNTIME_FILE, STEP_FILE
from daptq_ros.quant.layers import QuantLinear

EXPORTABLE_FAMILIES = ("pi0", "cogact")
NO_4BIT_ACTIVATIONS = "OpenVINO has no 4-bit activations: quantize with activation_bits 8 or null"
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
        raise ConfigError(NO_4BIT_ACTIVATIONS)
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
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.shape = (layer.out_features, layer.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale
        # + 0 x (one input element) before the broadcast: the weight depends on an input, so
        # the converter keeps Add -> Broadcast instead of folding a dense float constant.
        anchor = x.flatten()[:1].sum() * 0.0
        weight = (getattr(self, WEIGHT_BUFFER) + anchor).expand(self.shape)
        return F.linear(x, weight, self.bias)


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


def _fix_shapes(graph: Any, example: tuple[torch.Tensor, ...], prompt_axes: dict[str, int]) -> None:
    """Make every input's shape static, as traced (batch 1, as the robot runs), except its axis
    of prompt length. Static shapes let the CPU plugin choose its kernels at compile time (a
    pi0 flow step took 15.2 ms instead of 17.0 fully dynamic, measured here)."""
    import openvino as ov

    shapes = {}
    for port, tensor in zip(graph.inputs, example, strict=True):
        shape = list(tensor.shape)
        axis = prompt_axes.get(port.get_any_name())
        if axis is not None:
            shape[axis] = -1
        shapes[port.get_any_name()] = ov.PartialShape(shape)
    graph.reshape(shapes)


def check_exportable(family: str, activation_bits: int | None) -> None:
    """Refuse, before any calibration, what the export cannot carry: a family without graphs
    (openvino_graphs.py) or 4-bit activations."""
    if family not in EXPORTABLE_FAMILIES:
        raise ConfigError(
            f"the OpenVINO runtime exports {' and '.join(EXPORTABLE_FAMILIES)} models; this one "
            f"is {family}: run it with --runtime torch"
        )
    if activation_bits == 4:
        raise ConfigError(NO_4BIT_ACTIVATIONS)


def export_openvino(policy: VlaPolicy, directory: str | Path) -> dict[str, Any]:
    """Convert a quantized (simulated) policy to `directory`/openvino; returns runtime.json.

    The policy's QuantLinears are set to the runtime's activation arithmetic first (see
    match_runtime_arithmetic), so the simulated policy and the artefact compute the same chunk.
    """
    import openvino as ov

    from daptq_ros.policy.openvino_graphs import family_graphs, traceable_cache

    family = policy.loaded.meta.family
    check_exportable(family, None)
    model = policy.model.float().eval()
    settings = match_runtime_arithmetic(model)
    started = time.perf_counter()
    with traceable_cache(), _swapped_for_export(model) as layers:
        graphs = family_graphs(policy)
        converted = []
        for module, example, names in (
            (graphs.prefix, graphs.prefix_example, graphs.prefix_names),
            (graphs.step, graphs.step_example, graphs.step_names),
        ):
            graph = _convert(module, example, names)
            _fix_shapes(graph, example, graphs.prompt_axes)
            converted.append(graph)
    found = set().union(*(_insert_integer_weights(graph, layers) for graph in converted))
    out = Path(directory) / RUNTIME_DIR
    out.mkdir(parents=True, exist_ok=True)
    for graph, name in zip(converted, (PREFIX_FILE, STEP_FILE), strict=True):
        ov.save_model(graph, out / name, compress_to_fp16=False)
    runtime = {
        "runtime": "openvino",
        "openvino": ov.__version__,
        "family": family,
        **graphs.settings,
        **settings,
        "layers": {name: describe(layer) for name, layer in layers.items() if name in found},
        # pi0: the backbone's last attention output and MLP (only its keys and values are read).
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
