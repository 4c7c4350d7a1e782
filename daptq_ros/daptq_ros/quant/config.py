"""Bit configurations: what each layer is quantized to, loaded from YAML and validated.

A config names the method, the default weight/activation bits, grouping, per-layer overrides by
module-name pattern (fnmatch, the last matching override wins) and the layers kept in high
precision (bfloat16). Every mistake is reported as one line naming the key and what is allowed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from daptq_ros.errors import ConfigError
from daptq_ros.quant.formats import GRANULARITIES, WEIGHT_INT_BITS, WeightFormat

METHODS: tuple[str, ...] = ("rtn", "smoothquant", "awq", "gptq")
HIGH_PRECISION_BITS = 16  # bfloat16: the precision of "kept" layers and of the deployed model
FULL_PRECISION_BITS = 32  # the fp32 preset: nothing is touched
# Dynamic per-token activation quantization: 8 runs on the W8A8 kernel or as quantize-dequantize
# before the weight kernel; 4 is always quantize-dequantize (no int4 x int4 kernel here), so
# W4A4 measures the accuracy of 4-bit activations, not their speed.
ACTIVATION_BITS: tuple[int | None, ...] = (None, 8, 4)
# Group sizes the deployed int4 kernel (tinygemm) accepts; simulated mode takes any divisor.
DEPLOYABLE_GROUP_SIZES: tuple[int, ...] = (32, 64, 128)

# Method-specific arguments and their defaults (documented in each method's module).
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "rtn": {},
    "smoothquant": {"alpha": 0.5},
    "awq": {"n_grid": 20, "max_samples": 4096},
    "gptq": {"percdamp": 0.01, "block_size": 128},
}


@dataclass(frozen=True)
class LayerSpec:
    """What one Linear layer becomes: weight bits (2-8, 16 = bf16, 32 = fp32) and activations."""

    weight_bits: int
    activation_bits: int | None
    symmetric: bool
    granularity: str
    group_size: int

    @property
    def is_integer(self) -> bool:
        """True when the weight is stored as integer codes (2-8 bits)."""
        return self.weight_bits in WEIGHT_INT_BITS

    def weight_format(self) -> WeightFormat:
        """The integer format of the weight (only for 2-8 bit layers)."""
        return WeightFormat(self.weight_bits, self.symmetric, self.granularity, self.group_size)  # type: ignore[arg-type]

    def describe(self) -> str:
        """Short label such as 'W4A8 asym g128' or 'BF16'."""
        if not self.is_integer:
            return "FP32" if self.weight_bits == FULL_PRECISION_BITS else "BF16"
        act = f"A{self.activation_bits}" if self.activation_bits else ""
        return (
            self.weight_format()
            .describe()
            .replace(f"W{self.weight_bits}", f"W{self.weight_bits}{act}")
        )


_SPEC_KEYS = ("weight_bits", "activation_bits", "symmetric", "granularity", "group_size")


@dataclass(frozen=True)
class LayerOverride:
    """Spec fields replaced for every layer whose name matches `pattern`."""

    pattern: str
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantConfig:
    """A validated bit configuration (see the module docstring and config/bits/*.yaml)."""

    method: str = "rtn"
    weight_bits: int = 4
    activation_bits: int | None = None
    symmetric: bool = False
    granularity: str = "group"
    group_size: int = 128
    keep: tuple[str, ...] = ()
    overrides: tuple[LayerOverride, ...] = ()
    method_args: dict[str, Any] = field(default_factory=dict)
    name: str = "custom"

    def __post_init__(self) -> None:
        _validate_method(self.method, self.method_args, self.name)
        _validate_spec(self.default_spec(), self.name, where="", allow_fp32=True)
        for override in self.overrides:
            _validate_spec(
                replace(self.default_spec(), **override.changes),
                self.name,
                where=f"overrides['{override.pattern}'].",
                allow_fp32=False,
            )

    def default_spec(self) -> LayerSpec:
        """The spec of a layer no override or keep pattern matches."""
        return LayerSpec(
            self.weight_bits,
            self.activation_bits,
            self.symmetric,
            self.granularity,
            self.group_size,
        )

    def spec_for(self, layer_name: str) -> LayerSpec:
        """The spec of one named Linear layer after keep patterns and overrides."""
        if any(fnmatch.fnmatchcase(layer_name, p) for p in self.keep):
            return replace(
                self.default_spec(), weight_bits=HIGH_PRECISION_BITS, activation_bits=None
            )
        spec = self.default_spec()
        for override in self.overrides:
            if fnmatch.fnmatchcase(layer_name, override.pattern):
                spec = replace(spec, **override.changes)
        return spec

    def method_arg(self, key: str) -> Any:
        """A method argument, falling back to the method's default."""
        return self.method_args.get(key, METHOD_ARGS[self.method][key])

    def to_dict(self) -> dict[str, Any]:
        """The YAML-serialisable form (what `load_config` reads back)."""
        return {
            "name": self.name,
            "method": self.method,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "symmetric": self.symmetric,
            "granularity": self.granularity,
            "group_size": self.group_size,
            "keep": list(self.keep),
            "overrides": [{"pattern": o.pattern, **o.changes} for o in self.overrides],
            "method_args": dict(self.method_args),
        }


def exact_pattern(name: str) -> str:
    """An fnmatch pattern matching exactly `name` ([, * and ? wrapped in brackets)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _fail(name: str, message: str) -> None:
    raise ConfigError(f"bit config '{name}': {message}")


def _validate_method(method: str, method_args: dict[str, Any], name: str) -> None:
    if method not in METHODS:
        _fail(name, f"method '{method}' is unknown; allowed: {', '.join(METHODS)}")
    unknown = sorted(set(method_args) - set(METHOD_ARGS[method]))
    if unknown:
        allowed = ", ".join(METHOD_ARGS[method]) or "none"
        _fail(name, f"method_args key '{unknown[0]}' is unknown for {method}; allowed: {allowed}")


def _validate_spec(spec: LayerSpec, name: str, where: str, allow_fp32: bool) -> None:
    allowed_bits = (*WEIGHT_INT_BITS, HIGH_PRECISION_BITS) + (
        (FULL_PRECISION_BITS,) if allow_fp32 else ()
    )
    if not isinstance(spec.weight_bits, int) or spec.weight_bits not in allowed_bits:
        _fail(
            name,
            f"{where}weight_bits={spec.weight_bits!r} is not allowed; allowed: "
            f"{', '.join(map(str, allowed_bits))}",
        )
    if spec.activation_bits not in ACTIVATION_BITS:
        _fail(
            name,
            f"{where}activation_bits={spec.activation_bits!r} is not allowed; "
            "allowed: null (no activation quantization), 8 or 4 (simulated)",
        )
    if spec.granularity not in GRANULARITIES:
        _fail(
            name,
            f"{where}granularity='{spec.granularity}' is not allowed; allowed: "
            f"{', '.join(GRANULARITIES)}",
        )
    if not isinstance(spec.symmetric, bool):
        _fail(name, f"{where}symmetric={spec.symmetric!r} must be true or false")
    if not isinstance(spec.group_size, int) or spec.group_size < 2:
        _fail(name, f"{where}group_size={spec.group_size!r} must be an integer >= 2")


_TOP_KEYS = tuple(f.name for f in fields(QuantConfig))


def config_from_dict(data: dict[str, Any], name: str = "custom") -> QuantConfig:
    """Build and validate a QuantConfig from a parsed YAML mapping."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"bit config '{name}': expected a mapping of keys, got {type(data).__name__}"
        )
    name = str(data.get("name", name))
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        _fail(name, f"unknown key '{unknown[0]}'; allowed keys: {', '.join(_TOP_KEYS)}")
    overrides = []
    for entry in data.get("overrides") or []:
        if not isinstance(entry, dict) or "pattern" not in entry:
            _fail(name, f"each override needs a 'pattern' key, got {entry!r}")
        changes = {k: v for k, v in entry.items() if k != "pattern"}
        bad = sorted(set(changes) - set(_SPEC_KEYS))
        if bad:
            _fail(
                name,
                f"overrides['{entry['pattern']}']: unknown key '{bad[0]}'; allowed keys: "
                f"pattern, {', '.join(_SPEC_KEYS)}",
            )
        overrides.append(LayerOverride(str(entry["pattern"]), changes))
    values = {
        k: v for k, v in data.items() if k not in ("overrides", "keep", "method_args", "name")
    }
    return QuantConfig(
        **values,
        keep=tuple(str(p) for p in data.get("keep") or ()),
        overrides=tuple(overrides),
        method_args=dict(data.get("method_args") or {}),
        name=name,
    )


def preset_dir() -> Path:
    """The folder of the shipped presets (daptq_ros.share finds it in every install layout)."""
    from daptq_ros.share import share_path

    return share_path("config", "bits")


def list_presets() -> list[str]:
    """Names of the shipped bit-config presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_config(path_or_preset: str | Path) -> QuantConfig:
    """Load a bit config from a YAML file, or a preset by name (e.g. 'w4a8')."""
    path = Path(path_or_preset)
    if not path.suffix and not path.exists():
        path = preset_dir() / f"{path_or_preset}.yaml"
        if not path.exists():
            raise ConfigError(
                f"bit config '{path_or_preset}' is neither a file nor a preset; "
                f"presets: {', '.join(list_presets())}"
            )
    if not path.is_file():
        raise ConfigError(
            f"bit config file '{path}' does not exist; pass a YAML file or a preset "
            f"name ({', '.join(list_presets())})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(
            f"bit config '{path}' is not valid YAML: {str(error).splitlines()[0]}"
        ) from None
    return config_from_dict(data, name=path.stem)


def check_layer(spec: LayerSpec, layer_name: str, in_features: int, config_name: str) -> None:
    """Reject a spec that cannot apply to this layer's width (group size must divide it)."""
    if spec.is_integer and spec.granularity == "group" and in_features % spec.group_size:
        divisors = [d for d in (32, 64, 128, 256) if in_features % d == 0]
        _fail(
            config_name,
            f"group_size={spec.group_size} does not divide in_features="
            f"{in_features} of layer '{layer_name}'; use a divisor "
            f"({', '.join(map(str, divisors)) or 'or granularity: channel'}) or an override",
        )
