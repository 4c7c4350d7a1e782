"""A model directory's description without its weights: daptq.json (ModelMeta), config.json
and the tokenizer, and the check that the directory is complete.

Reading these needs neither the family's architecture nor torch, so a runtime that never builds
the torch model (policy/runtime_openvino.py) loads only this (policy/model_dir.py loads weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daptq_ros.bags.state import EE_STATE_NAMES, STATE_SOURCES, StateSpec
from daptq_ros.errors import BagError, ModelError
from daptq_ros.policy.contract import ACTION_SPACES
from daptq_ros.policy.images import ImageResize
from daptq_ros.policy.normalize import Normalizer
from daptq_ros.policy.tokenizer import InstructionTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "daptq.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, META_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    """The content of daptq.json."""

    family: str
    action_space: str
    action_names: tuple[str, ...]
    horizon: int
    dt: float
    image_size: tuple[int, int]  # (H, V*W): the model's input, V views tiled horizontally
    num_views: int
    normalizer: Normalizer
    provenance: dict[str, Any] = field(default_factory=dict)
    state_source: str = STATE_SOURCES[0]
    state_names: tuple[str, ...] = EE_STATE_NAMES  # the state's dimensions (bags.state)
    # The checkpoint processor's prompt template (policy.tokenizer): "" for our own models.
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    # How camera views become image_size (policy.images): the checkpoint processor's way.
    image_resize: ImageResize = field(default_factory=ImageResize)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_names", tuple(self.action_names))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.action_space not in ACTION_SPACES:
            raise ModelError(
                f"daptq.json: action_space {self.action_space!r} is not one of "
                f"{', '.join(ACTION_SPACES)}"
            )
        if self.state_source == "joint_positions_gripper":  # daptq.json of an older import
            raise ModelError(
                "daptq.json: state_source joint_positions_gripper is no longer read (its "
                "gripper was the simulated Sawyer's); import the model again with a mapping "
                "whose state_source is joint_positions and whose state_names name your joints"
            )
        try:
            spec = StateSpec(self.state_source, self.state_names)
        except BagError as error:
            raise ModelError(f"daptq.json: {error}") from None
        object.__setattr__(self, "state_names", spec.names)
        if len(self.action_names) != self.normalizer.action_dim:
            raise ModelError(
                f"daptq.json: {len(self.action_names)} action names but normalisation "
                f"statistics for {self.normalizer.action_dim} action dimensions"
            )

    @property
    def state_spec(self) -> StateSpec:
        """How the state vector is built from an arm's joint states (bags.state)."""
        return StateSpec(self.state_source, self.state_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "action_space": self.action_space,
            "action_names": list(self.action_names),
            "horizon": self.horizon,
            "dt": self.dt,
            "image_size": list(self.image_size),
            "num_views": self.num_views,
            "image_resize": self.image_resize.to_dict(),
            "normalization": self.normalizer.to_dict(),
            "state_source": self.state_source,
            "state_names": list(self.state_names),
            "prompt": {"prefix": self.prompt_prefix, "suffix": self.prompt_suffix},
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Inverse of to_dict; a ModelError names what is missing."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"daptq.json has format_version {data.get('format_version')!r}; this version "
                f"reads {FORMAT_VERSION}: re-export the model with this daptq_ros"
            )
        try:
            return cls(
                family=data["family"],
                action_space=data["action_space"],
                action_names=data["action_names"],
                horizon=int(data["horizon"]),
                dt=float(data["dt"]),
                image_size=data["image_size"],
                num_views=int(data["num_views"]),
                image_resize=ImageResize.from_dict(data.get("image_resize", {})),
                normalizer=Normalizer.from_dict(data["normalization"]),
                provenance=data.get("provenance", {}),
                state_source=data.get("state_source", STATE_SOURCES[0]),
                state_names=data.get("state_names", EE_STATE_NAMES),
                prompt_prefix=str(data.get("prompt", {}).get("prefix", "")),
                prompt_suffix=str(data.get("prompt", {}).get("suffix", "")),
            )
        except KeyError as error:
            raise ModelError(f"daptq.json lacks the key {error}") from None


def check_model_dir(directory: str | Path) -> Path:
    """The directory, if it holds every required file; else a ModelError naming the first gap."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(
            f"{directory}: model directory does not exist; train one with `daptq train` "
            "or pass the path of an exported model"
        )
    if not (directory / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(
                f"{directory}: holds the pickle checkpoint {pickles[0]} instead of {WEIGHTS_FILE}; "
                "pickles are never loaded (they can run code): convert the weights to "
                "safetensors (safetensors.torch.save_model) in a trusted environment"
            )
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise ModelError(
                f"{directory}: {name} is missing; a model directory needs "
                f"{', '.join(REQUIRED_FILES)} (re-export it with `daptq train`)"
            )
    return directory


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a ModelError if it is not one."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def read_model_files(
    directory: str | Path,
) -> tuple[ModelMeta, dict[str, Any], InstructionTokenizer]:
    """A model directory's daptq.json, config.json and tokenizer (no weights are read)."""
    directory = check_model_dir(directory)
    meta = ModelMeta.from_dict(read_json(directory / META_FILE))
    return meta, read_json(directory / CONFIG_FILE), model_tokenizer(directory, meta)


def model_tokenizer(directory: Path, meta: ModelMeta) -> InstructionTokenizer:
    """The directory's tokenizer with its model's prompt template."""
    return InstructionTokenizer.load(
        directory / TOKENIZER_FILE, meta.prompt_prefix, meta.prompt_suffix
    )
