"""Import a user's pretrained pi0 (transformers format) as a model directory of this package.

A transformers pi0 checkpoint (`PI0ForConditionalGeneration.save_pretrained` beside
`PI0Processor.save_pretrained`: config.json, model.safetensors, tokenizer.json and
processor_config.json) plus a robot mapping becomes a model directory that the policy node,
`daptq quantize` and `daptq eval` load like the embedded models:

- config.json: the checkpoint's PI0Config, plus the real action width and the views per image;
- model.safetensors: the weights, loaded with transformers (safetensors only, local files,
  no remote code) and written back;
- tokenizer.json: the checkpoint's own tokenizer, padded and truncated to a fixed length;
- daptq.json: the mapping (action space and names, dt, state source, views) and the
  normalisation statistics: the processor's (PI0Processor stores mean/std) or statistics
  fitted on the user's own recordings (`daptq import --stats-from BAGS`).

The robot mapping (config/mappings/*.yaml, or a YAML path) says what the checkpoint's state and
action dimensions are on the arm. LeRobot's pi0 folders (config.json with "type": "pi0",
LeRobot's key names, its processor files) are read directly (policy/lerobot.py); their tokenizer
is named, not held, so a local copy is passed with `--tokenizer`. Both layouts get their
processor's prompt: the tokenizer's BOS, the instruction and a newline, and their processor's
image resizing (daptq.json "image_resize", policy/images.py): for a transformers checkpoint read
from its image processor's settings (`image_resize_from_processor`), for LeRobot's a fact of
LeRobot's pi0 (lerobot.LEROBOT_RESIZE).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tokenizers import Tokenizer
from transformers import PI0Config, PI0ForConditionalGeneration
from transformers.utils import is_torchvision_available

from daptq_ros.bags.state import StateSpec
from daptq_ros.errors import BagError, ModelError
from daptq_ros.policy.checkpoint_tensors import check_checkpoint_tensors
from daptq_ros.policy.contract import ACTION_SPACES
from daptq_ros.policy.families.pi0 import Pi0Adapter
from daptq_ros.policy.images import ImageResize
from daptq_ros.policy.lerobot import PROMPT_SUFFIX, is_lerobot_folder, read_lerobot_pi0
from daptq_ros.policy.model_dir import save_model_dir
from daptq_ros.policy.model_meta import PICKLE_SUFFIXES, ModelMeta
from daptq_ros.policy.normalize import Normalizer
from daptq_ros.policy.tokenizer import InstructionTokenizer
from daptq_ros.share import share_path

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# The image processors of pi0 checkpoints and their class defaults (transformers 5.24,
# models/pi0/image_processing_pi0.py, models/siglip/image_processing_siglip.py): both BICUBIC,
# rescale 1/255, mean = std = 0.5; PI0's fits a view into 224 x 224 and pads the rest (with 0
# after normalising, at the bottom and right: image_processing_backends.py `pad`).
IMAGE_DEFAULTS: dict[str, Any] = {
    "do_resize": True,
    "resample": 3,  # PIL's BICUBIC
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5] * 3,
    "image_std": [0.5] * 3,
    "do_pad": False,
    "do_center_crop": False,
}
IMAGE_PROCESSORS: dict[str, dict[str, Any]] = {
    "SiglipImageProcessor": {"size": {"height": 224, "width": 224}},
    "PI0ImageProcessor": {
        "size": {"max_height": 224, "max_width": 224},
        "do_pad": True,
        "pad_size": {"height": 224, "width": 224},
    },
}
MAPPING_FIELDS = (
    "name",
    "num_views",
    "state_source",
    "state_names",
    "action_space",
    "action_names",
    "dt",
    "instruction_length",
)


@dataclass(frozen=True)
class RobotMapping:
    """What an imported checkpoint's inputs and outputs are on the arm."""

    name: str
    num_views: int  # camera views tiled side by side in the node's image, in checkpoint order
    state_source: str  # what the node feeds as state (bags.state.STATE_SOURCES)
    state_names: tuple[str, ...]  # the checkpoint's state dimensions, in order
    action_space: str  # policy.contract.ACTION_SPACES
    action_names: tuple[str, ...]  # the checkpoint's action dimensions, in order
    dt: float  # s between the rows of a chunk (the rate the checkpoint was trained at)
    instruction_length: int  # tokens the instruction is padded or truncated to


def mappings_dir() -> Path:
    """The folder of the shipped robot mappings."""
    return share_path("config", "mappings")


def load_mapping(name_or_path: str | Path) -> RobotMapping:
    """A mapping preset by name (e.g. 'panda') or a YAML file; ModelError names a bad field."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = mappings_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in mappings_dir().glob("*.yaml")))
            raise ModelError(
                f"robot mapping '{name_or_path}' is neither a preset ({names}) nor a YAML file"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ModelError(f"robot mapping {path}: cannot be read ({error})") from None
    if not isinstance(data, Mapping):
        raise ModelError(f"robot mapping {path}: must map the fields {', '.join(MAPPING_FIELDS)}")
    return mapping_from_dict(data, str(path))


def mapping_from_dict(data: Mapping[str, Any], source: str) -> RobotMapping:
    """Validate a mapping; the error names the file and the field."""
    if missing := [key for key in MAPPING_FIELDS if key not in data]:
        raise ModelError(f"robot mapping {source}: lacks {', '.join(missing)}")
    if unknown := sorted(set(data) - set(MAPPING_FIELDS)):
        raise ModelError(f"robot mapping {source}: unknown field {unknown[0]!r}")

    def fail(field: str, need: str) -> ModelError:
        return ModelError(f"robot mapping {source}: {field} is {data[field]!r}; need {need}")

    if data["action_space"] not in ACTION_SPACES:
        raise fail("action_space", f"one of {', '.join(ACTION_SPACES)}")
    for field in ("state_names", "action_names"):
        if not isinstance(data[field], list) or not data[field]:
            raise fail(field, "a non-empty list of names")
    for field in ("num_views", "instruction_length"):
        if isinstance(data[field], bool) or not isinstance(data[field], int) or data[field] < 1:
            raise fail(field, "an integer >= 1")
    if isinstance(data["dt"], bool) or not isinstance(data["dt"], int | float) or data["dt"] <= 0:
        raise fail("dt", "seconds > 0")
    try:
        StateSpec(str(data["state_source"]), tuple(map(str, data["state_names"])))
    except BagError as error:
        raise ModelError(f"robot mapping {source}: {error}") from None
    return RobotMapping(
        name=str(data["name"]),
        num_views=int(data["num_views"]),
        state_source=str(data["state_source"]),
        state_names=tuple(map(str, data["state_names"])),
        action_space=str(data["action_space"]),
        action_names=tuple(map(str, data["action_names"])),
        dt=float(data["dt"]),
        instruction_length=int(data["instruction_length"]),
    )


def check_weights(directory: Path) -> None:
    """A ModelError naming the first thing a checkpoint folder lacks: folder, weights, config."""
    if not directory.is_dir():
        raise ModelError(f"{directory}: checkpoint directory does not exist")
    if not any(directory.glob("model*.safetensors")):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(
                f"{directory}: the weights are the pickle {pickles[0]}, which is never loaded (it "
                "can run code); save the model with save_pretrained(safe_serialization=True)"
            )
        raise ModelError(f"{directory}: no model*.safetensors; save it with save_pretrained")
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory}: config.json is missing; save it with save_pretrained")


def check_processor(directory: Path) -> None:
    """A transformers checkpoint needs its PI0Processor's files (statistics, tokenizer)."""
    if not any((directory / name).is_file() for name in PROCESSOR_FILES):
        raise ModelError(
            f"{directory}: the processor files ({' or '.join(PROCESSOR_FILES)}) are missing; "
            "save the checkpoint's PI0Processor with save_pretrained into the same folder"
        )


def tokenizer_folder(checkpoint: Path, given: Path | None, named: str = "") -> Path:
    """Where tokenizer.json is: `given` (--tokenizer), else the checkpoint folder."""
    folder = given if given is not None else checkpoint
    if (folder / "tokenizer.json").is_file():
        return folder
    if given is not None:
        raise ModelError(f"--tokenizer {given}: no tokenizer.json there")
    if named:
        raise ModelError(
            f"{checkpoint}: a LeRobot policy names its tokenizer '{named}' instead of holding "
            "it; pass --tokenizer DIR, a local copy of that tokenizer (a folder with "
            "tokenizer.json), or copy its files into the checkpoint folder"
        )
    raise ModelError(
        f"{checkpoint}: tokenizer.json is missing; save the checkpoint's PI0Processor (or its "
        "tokenizer) with save_pretrained into the same folder, or pass --tokenizer DIR"
    )


def checkpoint_config(directory: Path) -> Any:
    """The checkpoint's PI0Config (config.json only)."""
    try:
        return PI0Config.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ModelError(f"{directory}/config.json is not a pi0 config ({error})") from None


def stats_from_processor(directory: Path, mapping: RobotMapping) -> Normalizer | None:
    """The PI0Processor's state/action mean and std for the mapping's dimensions, if it has them."""
    path = next(directory / n for n in PROCESSOR_FILES if (directory / n).is_file())
    processor = json.loads(path.read_text())
    keys = ("state_mean", "state_std", "actions_mean", "actions_std")
    if any(processor.get(key) is None for key in keys):
        return None
    state_mean, state_std, action_mean, action_std = (np.asarray(processor[k]) for k in keys)
    check_dims(state_mean.size, action_mean.size, mapping, str(path))
    return Normalizer.from_mean_std(state_mean, state_std, action_mean, action_std)


def image_processor_settings(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint's image processor settings: processor_config.json's "image_processor",
    else preprocessor_config.json (older layouts), with the file they came from."""
    processor, preprocessor = (directory / name for name in PROCESSOR_FILES)
    for path, key in ((processor, "image_processor"), (preprocessor, None)):
        data = json.loads(path.read_text()) if path.is_file() else {}
        settings = data.get(key) if key else data
        if isinstance(settings, dict) and settings:
            return path, settings
    raise ModelError(
        f"{directory}: the processor files hold no image processor settings; save the "
        "checkpoint's PI0Processor (with its image processor) with save_pretrained"
    )


def image_resize_from_processor(directory: Path, side: int) -> ImageResize:
    """How the checkpoint's image processor brings a camera view to side x side pixels; a
    ModelError names a setting that the model's [-1, 1] pixel input cannot reproduce."""
    path, saved = image_processor_settings(directory)
    kind = str(saved.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
    if kind not in IMAGE_PROCESSORS:
        raise ModelError(
            f"{path}: image processor {kind or '(no image_processor_type)'} is not one of pi0's "
            f"({', '.join(IMAGE_PROCESSORS)}); save the checkpoint with its PI0Processor"
        )
    given = {key: value for key, value in saved.items() if value is not None}
    settings = {**IMAGE_DEFAULTS, **IMAGE_PROCESSORS[kind], **given}

    def refuse(what: str, need: str) -> ModelError:
        return ModelError(f"{path}: {what}; pi0 is imported only with {need}")

    if not settings["do_resize"] or settings["do_center_crop"]:
        raise refuse("do_resize is off or do_center_crop on", "do_resize and no center crop")
    if int(settings["resample"]) != IMAGE_DEFAULTS["resample"]:
        raise refuse(f"resample is {settings['resample']}", "resample 3 (BICUBIC)")
    scale = settings["rescale_factor"] if settings["do_rescale"] else 1.0
    mean = settings["image_mean"] if settings["do_normalize"] else [0.0] * 3
    std = settings["image_std"] if settings["do_normalize"] else [1.0] * 3
    if not (
        np.isclose(float(scale), 1 / 255, rtol=1e-9)
        and np.allclose(mean, IMAGE_DEFAULTS["image_mean"])
        and np.allclose(std, IMAGE_DEFAULTS["image_std"])
    ):
        need = "pixels mapped to [-1, 1] (rescale 1/255, image_mean = image_std = 0.5)"
        raise refuse(f"rescale {scale}, image_mean {mean}, image_std {std}", need)
    size, pad = settings["size"], settings["pad_size"] if settings["do_pad"] else None
    if isinstance(size, dict):  # saved SizeDicts may list unset keys as null
        size = {key: value for key, value in size.items() if value is not None}
    square = {"height": side, "width": side}
    # transformers runs its torchvision backend when torchvision is installed, else PIL's
    # (models/auto/image_processing_auto.py); PI0ImageProcessor exists for torchvision only.
    torch_backend = kind == "PI0ImageProcessor" or is_torchvision_available()
    kernel = "torch_bicubic" if torch_backend else "pil_bicubic"
    if size == square:
        return ImageResize("stretch", kernel)
    if size == {"max_height": side, "max_width": side} and pad == square:
        return ImageResize("letterbox", kernel, pad_value=0.5, pad="end")  # 0 after normalising
    raise refuse(
        f"size {size} with do_pad {settings['do_pad']} and pad_size {settings.get('pad_size')} "
        f"do not give the vision tower's {side} x {side} views",
        f"size {square}, or max_height = max_width = {side} padded to {square}",
    )


def check_dims(state_dim: int, action_dim: int, mapping: RobotMapping, source: str) -> None:
    """Statistics of `source` must have the mapping's state and action dimensions."""
    want = (len(mapping.state_names), len(mapping.action_names))
    if (state_dim, action_dim) != want:
        raise ModelError(
            f"normalisation statistics from {source} have {state_dim} state and {action_dim} "
            f"action dimensions, the robot mapping {mapping.name} {want[0]} and {want[1]}; "
            "use statistics of this robot's recordings (--stats-from BAGS) or fix the mapping"
        )


def special_token(directory: Path, role: str, default: str) -> str:
    """The tokenizer's `role` token ("pad_token", "bos_token") from its tokenizer_config.json."""
    config = directory / "tokenizer_config.json"
    token = json.loads(config.read_text()).get(role) if config.is_file() else None
    token = token or default
    return token["content"] if isinstance(token, dict) else str(token)


def fixed_length_tokenizer(directory: Path, length: int) -> InstructionTokenizer:
    """The checkpoint's tokenizer.json padded (with its own pad token) and truncated to `length`,
    with pi0's prompt template: the tokenizer's BOS, the instruction, a newline."""
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    pad = special_token(directory, "pad_token", "<pad>")
    bos = special_token(directory, "bos_token", "<bos>")
    for role, token in (("pad_token", pad), ("bos_token", bos)):
        if tokenizer.token_to_id(token) is None:
            raise ModelError(f"{directory}: the tokenizer has no {role} {token!r}; set {role}")
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad, length=length)
    tokenizer.enable_truncation(max_length=length)
    return InstructionTokenizer(tokenizer, bos, PROMPT_SUFFIX)


@dataclass(frozen=True)
class Checkpoint:
    """What an import reads from a checkpoint folder, whichever its layout."""

    layout: str  # "transformers" or "lerobot"
    config: Any  # transformers' PI0Config
    normalizer: Normalizer | None  # the checkpoint's own statistics, if it has them
    tokenizer: Path  # the folder of tokenizer.json
    instruction_length: int  # tokens the prompt is padded to
    image_resize: ImageResize  # how its processor brings each camera to the model's size


def check_mapping_fits(config: Any, mapping: RobotMapping) -> None:
    """The mapping's state and action dimensions must fit the checkpoint's padded widths."""
    for kind, names, limit in (
        ("state", mapping.state_names, config.max_state_dim),
        ("action", mapping.action_names, config.max_action_dim),
    ):
        if len(names) > limit:
            raise ModelError(
                f"robot mapping {mapping.name}: {len(names)} {kind} dimensions, but the "
                f"checkpoint takes at most {limit} (max_{kind}_dim); fix {kind}_names"
            )


def read_checkpoint(checkpoint: Path, mapping: RobotMapping, tokenizer: Path | None) -> Checkpoint:
    """Config, statistics and tokenizer of a transformers or LeRobot pi0 folder (ModelError)."""
    check_weights(checkpoint)
    if is_lerobot_folder(checkpoint):
        policy = read_lerobot_pi0(checkpoint)
        check_mapping_fits(policy.config, mapping)
        check_dims(policy.state_dim, policy.action_dim, mapping, f"{checkpoint}/config.json")
        folder = tokenizer_folder(checkpoint, tokenizer, policy.tokenizer_name)
        length, resize = policy.max_length, policy.image_resize
        return Checkpoint("lerobot", policy.config, policy.normalizer, folder, length, resize)
    check_processor(checkpoint)
    folder = tokenizer_folder(checkpoint, tokenizer)
    config = checkpoint_config(checkpoint)
    if getattr(config, "daptq_vision_stem", None):
        raise ModelError(f"{checkpoint}: a daptq model directory, not a checkpoint to import")
    check_mapping_fits(config, mapping)
    statistics = stats_from_processor(checkpoint, mapping)
    side = int(config.vlm_config.vision_config.image_size)
    resize = image_resize_from_processor(checkpoint, side)
    return Checkpoint(
        "transformers", config, statistics, folder, mapping.instruction_length, resize
    )


def import_pi0(
    checkpoint: str | Path,
    mapping: RobotMapping,
    out: str | Path,
    normalizer: Normalizer | None = None,
    provenance: dict[str, Any] | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Write the model directory `out` for a transformers or LeRobot pi0 folder; returns `out`.

    `normalizer`: statistics fitted on the user's recordings (checked against the mapping's
    dimensions); None takes the checkpoint's own. `tokenizer`: a folder with tokenizer.json,
    when the checkpoint does not hold one (LeRobot's name theirs).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out} exists and is not empty; choose a new --out")
    # Every check before minutes of loading weights.
    source = read_checkpoint(checkpoint, mapping, None if tokenizer is None else Path(tokenizer))
    config = source.config
    if normalizer is not None:
        check_dims(normalizer.state_dim, normalizer.action_dim, mapping, "the recordings")
        stats = "fitted on the user's recordings"
    else:
        normalizer, stats = source.normalizer, f"the checkpoint's processor ({source.layout})"
    if normalizer is None:
        raise ModelError(
            f"{checkpoint}: the processor holds no state/action statistics; pass --stats-from "
            "BAGS (episodes recorded on this robot)"
        )
    instructions = fixed_length_tokenizer(source.tokenizer, source.instruction_length)
    # Every tensor checked against the config's model before the model is built.
    weights = sorted(checkpoint.glob("model*.safetensors"))
    check_checkpoint_tensors(lambda: PI0ForConditionalGeneration(config), weights, str(checkpoint))
    model = Pi0Adapter().from_pretrained(checkpoint, config)
    side = int(config.vlm_config.vision_config.image_size)
    meta = ModelMeta(
        family="pi0",
        action_space=mapping.action_space,
        action_names=mapping.action_names,
        horizon=int(config.chunk_size),
        dt=mapping.dt,
        image_size=(side, side * mapping.num_views),
        num_views=mapping.num_views,
        normalizer=normalizer,
        state_source=mapping.state_source,
        state_names=mapping.state_names,
        provenance={
            **(provenance or {}),
            "imported_from": str(checkpoint.resolve()),
            "checkpoint_layout": source.layout,
            "robot_mapping": mapping.name,
            "normalization": stats,
        },
        prompt_prefix=instructions.prefix,
        prompt_suffix=instructions.suffix,
        image_resize=source.image_resize,
    )
    settings = {
        **config.to_dict(),
        "daptq_action_dim": len(mapping.action_names),
        "daptq_num_views": mapping.num_views,
    }
    return save_model_dir(out, model, settings, instructions, meta)
