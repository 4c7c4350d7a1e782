"""Quantize a loaded VLA policy with a bit config (simulated or deployed), in place."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daptq_ros.errors import ConfigError
from daptq_ros.quant import QuantConfig, deploy, quantize
from daptq_ros.quant.api import METHOD_MODULES
from daptq_ros.quant.deploy import check_device
from daptq_ros.quant.kernel_choice import LayerChoice, deploy_measured
from daptq_ros.quant.kernel_fit import check_deployable, fit_to_kernels

FULL_PRECISION = "fp32"  # the bit config name that means: no quantization
RUNTIMES = ("torch", "openvino")  # torch: the reference and fallback; openvino: an exported model


def quantize_policy(
    policy: Any, config: QuantConfig, calibration: Iterable[Any] | None = None
) -> QuantConfig:
    """Quantize `policy.model` in place (simulated); returns the config as applied.

    Layers whose width does not fit the config's format get the nearest one their kernels run
    (quant.kernel_fit); the list is kept as `policy.kernel_fallbacks`.
    """
    check_deployable(config)
    applied, policy.kernel_fallbacks = fit_to_kernels(policy.model, config)
    quantize(policy.model, applied, calibration)  # replaces layers in place
    return applied


def deploy_policy(
    policy: Any,
    kernel_choice: str = "auto",
    whole_model_bf16: bool = False,
    kernels_by_layer: dict[str, str] | None = None,
) -> dict[str, LayerChoice]:
    """Put `policy.model` on real kernels, each layer's kernel measured for the rows it sees.

    One probe chunk (blank image, zero state) records the rows per layer; see
    quant.kernel_choice for the modes. The choices are also kept as `policy.kernel_choices`.
    `kernels_by_layer` deploys those kernels as given instead (what another process measured,
    e.g. the driver of a Ray evaluation), so that every worker computes the same arithmetic.
    """
    import numpy as np

    if kernels_by_layer is not None:
        policy.loaded.model = deploy(
            policy.model, policy.device.type, whole_model_bf16, kernels_by_layer
        )
        policy.kernel_choices = {}
        return {}

    blank = np.zeros((*policy.loaded.meta.image_size, 3), np.uint8)
    state = np.zeros(policy.state_dim)
    choices = deploy_measured(
        policy.model,
        lambda: policy.predict(blank, "probe", state),
        kernel_choice,
        policy.device.type,
        whole_model_bf16,
    )
    policy.kernel_choices = choices
    return choices


def needs_calibration(config: QuantConfig) -> bool:
    """True when the config's method reads calibration data (SmoothQuant, AWQ, GPTQ)."""
    return bool(METHOD_MODULES[config.method].NEEDS_CALIBRATION)


def check_runtime_bit_config(bits: str) -> QuantConfig:
    """Load the bit config `bits` (preset or file); refuse methods that need calibration and
    formats no deployed kernel runs."""
    from daptq_ros.quant import load_config

    config = load_config(bits)
    check_deployable(config)
    if needs_calibration(config):
        raise ConfigError(
            f"bit config '{config.name}' uses {config.method}, which needs calibration data; "
            "quantize the model offline (daptq quantize) and load that directory, or use an "
            "RTN config here (e.g. w8a8, w4a16)"
        )
    return config


def load_policy_with_bits(
    model_dir: str | Path,
    bits: str,
    deployed: bool = True,
    device: str = "cpu",
    num_steps: int | None = None,
    whole_model_bf16: bool = False,
    kernel_choice: str = "auto",
    kernels_by_layer: dict[str, str] | None = None,
    runtime: str = "torch",
) -> tuple[Any, str]:
    """Load a model directory and quantize it with `bits` ("fp32" = none); (policy, label).

    A directory written by `daptq quantize` is already quantized: it runs as stored (on the
    deployed kernels when `deployed`), and its bit config is the label. The label is also the
    policy's `bit_config` attribute, which the policy node reports. `whole_model_bf16`
    deploys the rest of a quantized model in bfloat16 too (see quant.deploy.deploy); a
    full-precision model stays float32. `kernel_choice` picks each deployed layer's kernel
    (quant.kernel_choice: auto, packed or fastest), unless `kernels_by_layer` names them.
    `runtime` "openvino" runs the directory's exported OpenVINO model (`daptq quantize
    --runtime openvino`) when deployed; simulated, such a directory computes the activation
    arithmetic of that runtime (policy.openvino_export).
    """
    from daptq_ros.policy import openvino_export, runtime_openvino
    from daptq_ros.policy.inference import load_policy

    check_device(device)
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime '{runtime}' is not one of {', '.join(RUNTIMES)}")
    if runtime == "openvino" and deployed:
        if bits != FULL_PRECISION:
            raise ConfigError(
                "the OpenVINO runtime runs a model directory exported by `daptq quantize "
                f"--runtime openvino` as it is; drop the bit config '{bits}'"
            )
        policy = runtime_openvino.load_openvino_policy(model_dir, torch_threads())
        if num_steps and num_steps != policy.num_steps:
            raise ConfigError(
                f"{model_dir}'s OpenVINO model was exported with {policy.num_steps} flow steps, "
                f"not {num_steps}; use {policy.num_steps} or export it again"
            )
        policy.bit_config = policy.loaded.meta.provenance["quantization"]["config"]["name"]
        return policy, policy.bit_config
    policy = load_policy(model_dir, device=device, num_steps=num_steps)
    stored = policy.loaded.meta.provenance.get("quantization")
    if stored is not None:
        name = stored["config"]["name"]
        if bits != FULL_PRECISION:
            raise ConfigError(
                f"{model_dir} is already quantized ({name}); load it with bit config fp32, "
                "or pass the full-precision model directory"
            )
        if deployed:
            deploy_policy(policy, kernel_choice, whole_model_bf16, kernels_by_layer)
        elif runtime == "openvino":
            openvino_export.match_runtime_arithmetic(policy.model)
        policy.bit_config = name
        return policy, name
    if bits == FULL_PRECISION:
        policy.bit_config = FULL_PRECISION
        return policy, FULL_PRECISION
    config = check_runtime_bit_config(bits)
    quantize_policy(policy, config)
    if deployed:
        deploy_policy(policy, kernel_choice, whole_model_bf16, kernels_by_layer)
    elif runtime == "openvino":
        openvino_export.match_runtime_arithmetic(policy.model)
    policy.bit_config = config.name
    return policy, config.name


def torch_threads() -> int:
    """The thread count torch was given (the same budget goes to another runtime)."""
    import torch

    return torch.get_num_threads()
