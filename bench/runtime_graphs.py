"""DA-PTQ's exact layers and their ONNX Runtime and OpenVINO graphs (for runtime_exact_weights.py).

A layer is quantized by daptq_ros's own quantizer and read back from its safetensors file
(ExactLayer: codes, scales, zero points, bias, the stored bytes); the graphs express those
numbers as they are: one com.microsoft::MatMulNBits node per layer for ONNX Runtime, and the
Constant(u4/u8) -> Convert -> Subtract -> Multiply -> MatMul decompression pattern for
OpenVINO. No runtime tool re-quantizes anything.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch
from onnx import TensorProto, helper, numpy_helper
from openvino import opset15 as ops
from safetensors import safe_open
from torch import nn

from daptq_ros.quant import QuantLinear, load_config, load_quantized, quantize, save_quantized
from daptq_ros.quant.config import LayerOverride, QuantConfig
from daptq_ros.quant.csrc import Compensation, fold_into_quantized
from daptq_ros.quant.formats import WeightFormat
from daptq_ros.quant.serialization import pack_nibbles

WIDTH = 2048
ORT_CHANNEL_BLOCK = 128  # per-channel scales are repeated per block of this many inputs in ORT


@dataclass
class ExactLayer:
    """One quantized layer as read back from the safetensors file."""

    name: str
    fmt: WeightFormat
    codes: np.ndarray  # uint8 [N, K], unpacked
    scale: np.ndarray  # float32 [N, G]
    zero: np.ndarray  # float32 [N, G], integer valued
    bias: np.ndarray | None  # float32 [N]
    file_codes: bytes  # `<name>.codes` exactly as stored (packed two per byte for <= 4 bit)

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    def weight64(self) -> np.ndarray:
        """(q - z) * s in float64, [N, K]."""
        rep = self.in_features // self.scale.shape[1]
        zero = np.repeat(self.zero.astype(np.float64), rep, axis=1)
        scale = np.repeat(self.scale.astype(np.float64), rep, axis=1)
        return (self.codes.astype(np.float64) - zero) * scale


# --------------------------------------------------------------------------- quantize + round trip


def make_config(formats: dict[str, dict]) -> QuantConfig:
    """The w4a8 preset with per-layer overrides (exact layer names)."""
    base = load_config("w4a8")
    overrides = tuple(LayerOverride(name, changes) for name, changes in formats.items() if changes)
    return replace(base, overrides=overrides, name="runtime_exact_weights")


def quantize_round_trip(
    names: list[str], config: QuantConfig, folder: Path, seed: int
) -> list[ExactLayer]:
    """Quantize Linear(WIDTH, WIDTH) layers, fold a diagonal CSRC, save, load, read back."""
    torch.manual_seed(seed)

    def architecture() -> nn.Sequential:
        return nn.Sequential(OrderedDict((n, nn.Linear(WIDTH, WIDTH)) for n in names))

    model = quantize(architecture(), config)
    for name in names:
        layer = model.get_submodule(name)
        comp = Compensation(
            gain=1.0 + 0.05 * torch.randn(WIDTH),
            shift=0.01 * torch.randn(WIDTH),
            U=torch.zeros(WIDTH, 0),
            V=torch.zeros(WIDTH, 0),
        )
        fold_into_quantized(layer, comp)
    path = save_quantized(model, folder / f"model_{seed}.safetensors", config)
    loaded, _ = load_quantized(architecture(), path)
    layers = []
    with safe_open(str(path), framework="pt") as handle:
        for name in names:
            q = loaded.get_submodule(name)
            assert isinstance(q, QuantLinear)
            layers.append(
                ExactLayer(
                    name=name,
                    fmt=q.fmt,
                    codes=q.codes.numpy(),
                    scale=q.scale.numpy(),
                    zero=q.zero.numpy(),
                    bias=None if q.bias is None else q.bias.detach().numpy(),
                    file_codes=handle.get_tensor(f"{name}.codes").numpy().tobytes(),
                )
            )
    return layers


# --------------------------------------------------------------------------- ONNX Runtime


def ort_container(layer: ExactLayer) -> dict:
    """MatMulNBits inputs/attributes: B [N, blocks, blob], scales [N, blocks], packed uint8 zp."""
    n, k = layer.codes.shape
    bits = 4 if layer.fmt.bits <= 4 else 8
    groups = layer.scale.shape[1]
    block = k // groups if groups > 1 else ORT_CHANNEL_BLOCK
    blocks = k // block
    rep = blocks // groups
    scales = np.repeat(layer.scale, rep, axis=1).astype(np.float32)
    zero_u8 = np.repeat(layer.zero, rep, axis=1).astype(np.uint8)
    if bits == 4:
        packed = np.frombuffer(layer.file_codes, dtype=np.uint8)  # the stored nibble-packed bytes
        b = packed.reshape(n, blocks, block // 2)
        zp = pack_nibbles(torch.from_numpy(zero_u8)).numpy()
    else:
        b = np.frombuffer(layer.file_codes, dtype=np.uint8).reshape(n, blocks, block)
        zp = zero_u8
    return {"bits": bits, "block": block, "B": b, "scales": scales, "zp": zp}


def ort_model(layers: list[ExactLayer], accuracy_level: int) -> onnx.ModelProto:
    """A chain of MatMulNBits nodes, input x [M, K] (M dynamic)."""
    nodes, inits = [], []
    prev = "x"
    for i, layer in enumerate(layers):
        c = ort_container(layer)
        p = f"l{i}_"
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(c["B"]), p + "B"),
            numpy_helper.from_array(c["scales"], p + "scales"),
            numpy_helper.from_array(np.ascontiguousarray(c["zp"]), p + "zp"),
        ]
        inputs = [prev, p + "B", p + "scales", p + "zp"]
        if layer.bias is not None:
            inits.append(numpy_helper.from_array(layer.bias.astype(np.float32), p + "bias"))
            inputs += ["", p + "bias"]  # g_idx absent, bias at index 5
        out = f"y{i}" if i < len(layers) - 1 else "y"
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [out],
                domain="com.microsoft",
                K=layer.in_features,
                N=layer.out_features,
                bits=c["bits"],
                block_size=c["block"],
                accuracy_level=accuracy_level,
            )
        )
        prev = out
    graph = helper.make_graph(
        nodes,
        "daptq_exact",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", layers[0].in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", layers[-1].out_features])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    return model


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A one-thread CPU session (no spinning: the machine is shared)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_bytes_check(layer: ExactLayer, model: onnx.ModelProto) -> dict:
    """Initializer bytes against the file's packed codes, scales and uint8 zero points."""
    inits = {t.name: t for t in model.graph.initializer}
    c = ort_container(layer)
    b = inits["l0_B"]
    zp = inits["l0_zp"]
    groups = layer.scale.shape[1]
    zp_ours = (
        pack_nibbles(torch.from_numpy(layer.zero.astype(np.uint8))).numpy()
        if c["bits"] == 4
        else layer.zero.astype(np.uint8)
    )
    return {
        "B_dtype": TensorProto.DataType.Name(b.data_type),
        "B_bytes": len(b.raw_data),
        "B_equals_file_codes": b.raw_data == layer.file_codes,
        "zp_bytes": len(zp.raw_data),
        # per-channel layers repeat z per ORT block; compare the per-group form when not repeated
        "zp_equals_packed_zero": groups == 1 or zp.raw_data == zp_ours.tobytes(),
        "scales_equal_file": groups == 1
        or inits["l0_scales"].raw_data == layer.scale.astype(np.float32).tobytes(),
        "fp32_weight_bytes": layer.out_features * layer.in_features * 4,
    }


# --------------------------------------------------------------------------- OpenVINO


def _const_low_bit(values: np.ndarray, shape: list[int], bits: int) -> ov.Node:
    """Constant(u4) from codes packed low nibble first along the flat order, or Constant(u8)."""
    flat = values.reshape(-1).astype(np.uint8)
    if bits == 8:
        return ov.op.Constant(flat.reshape(shape).copy(), shared_memory=False)
    packed = pack_nibbles(torch.from_numpy(flat)).numpy()
    tensor = ov.Tensor(ov.Type.u4, ov.Shape(shape))
    tensor.data[:] = packed
    return ov.op.Constant(tensor, shared_memory=False)


def _const_u4_from_file(layer: ExactLayer, shape: list[int]) -> ov.Node:
    """Constant(u4) whose bytes are exactly the stored `<name>.codes` bytes."""
    tensor = ov.Tensor(ov.Type.u4, ov.Shape(shape))
    tensor.data[:] = np.frombuffer(layer.file_codes, dtype=np.uint8)
    return ov.op.Constant(tensor, shared_memory=False)


def ov_layer(x: ov.Output, layer: ExactLayer) -> ov.Node:
    """The decompression pattern: Convert(codes) - Convert(zp), * scale, MatMul, + bias."""
    n, k = layer.codes.shape
    groups = layer.scale.shape[1]
    bits = 4 if layer.fmt.bits <= 4 else 8
    if groups == 1:
        w_shape, p_shape = [n, k], [n, 1]
    else:
        w_shape, p_shape = [n, groups, k // groups], [n, groups, 1]
    if bits == 4:
        codes = _const_u4_from_file(layer, w_shape)
    else:
        codes = _const_low_bit(np.frombuffer(layer.file_codes, dtype=np.uint8), w_shape, 8)
    zero = _const_low_bit(layer.zero, p_shape, bits)
    scale = ops.constant(layer.scale.astype(np.float32).reshape(p_shape))
    w = ops.subtract(ops.convert(codes, ov.Type.f32), ops.convert(zero, ov.Type.f32))
    w = ops.multiply(w, scale)
    if groups > 1:
        w = ops.reshape(w, ops.constant(np.array([n, k], dtype=np.int64)), False)
    y = ops.matmul(x, w, False, True)
    if layer.bias is not None:
        y = ops.add(y, ops.constant(layer.bias.astype(np.float32)))
    return y


def ov_model(layers: list[ExactLayer]) -> ov.Model:
    """A chain of decompression-pattern layers, input x [?, K]."""
    x = ops.parameter([-1, layers[0].in_features], ov.Type.f32, name="x")
    y: ov.Node = x
    for layer in layers:
        y = ov_layer(y.output(0), layer)
    return ov.Model([y.output(0)], [x], "daptq_exact")


def ov_compile(core: ov.Core, model: ov.Model, dq_group: int) -> ov.CompiledModel:
    """CPU, one thread, f32 activations, dynamic int8 quantization group `dq_group` (0 = off)."""
    return core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": dq_group,
            "INFERENCE_NUM_THREADS": 1,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
        },
    )


def ov_runtime_check(compiled: ov.CompiledModel) -> dict:
    """Layer types of the compiled graph and the precisions of the constants feeding each FC."""
    rt = compiled.get_runtime_model()

    def info(node: ov.Node, key: str) -> str:
        rt_info = node.get_rt_info()
        return str(rt_info[key].astype(str)) if key in rt_info else "?"

    fcs = []
    layer_types: dict[str, int] = {}
    for op in rt.get_ordered_ops():
        kind = info(op, "layerType")
        layer_types[kind] = layer_types.get(kind, 0) + 1
        if kind == "FullyConnected":
            inputs = [
                info(i.get_source_output().get_node(), "outputPrecisions") for i in op.inputs()
            ]
            fcs.append(
                {
                    "runtimePrecision": info(op, "runtimePrecision"),
                    "primitiveType": info(op, "primitiveType"),
                    "input_precisions": inputs,
                }
            )
    return {"layer_types": layer_types, "fully_connected": fcs}
