"""The model directory: save and load a VLA with its tokenizer, normalisation and provenance.

Layout (Hugging Face style, ARCHITECTURE.md "Model directory"):

    config.json        the family config (for pi0: a transformers PI0Config)
    model.safetensors  the weights; never a pickle
    tokenizer.json     the instruction tokenizer (`tokenizers` format)
    daptq.json         family, action space and names, horizon, dt, image size, views and
                       their resizing, normalisation statistics, provenance (command, data
                       seed, git revision, metrics)

Loading reads safetensors only: a directory that holds a pickle checkpoint (*.bin, *.pt, ...)
instead is refused, since unpickling can run arbitrary code. Nothing here contacts the
Hugging Face Hub, so HF_HUB_OFFLINE=1 holds trivially; remote code is never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from daptq_ros.errors import ModelError
from daptq_ros.policy.checkpoint_tensors import check_checkpoint_tensors
from daptq_ros.policy.families import FamilyAdapter, get_family
from daptq_ros.policy.model_meta import (
    CONFIG_FILE,
    META_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    ModelMeta,
    check_model_dir,
    model_tokenizer,
    read_json,
)
from daptq_ros.policy.tokenizer import InstructionTokenizer
from daptq_ros.quant import QuantConfig
from daptq_ros.quant.serialization import load_quantized, save_quantized


@dataclass
class LoadedModel:
    """A model with everything needed to run it."""

    model: nn.Module
    adapter: FamilyAdapter
    config: dict[str, Any]
    tokenizer: InstructionTokenizer
    meta: ModelMeta


def save_model_dir(
    directory: str | Path,
    model: nn.Module,
    config: dict[str, Any],
    tokenizer: InstructionTokenizer,
    meta: ModelMeta,
) -> Path:
    """Write the four files of a model directory (weights as safetensors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # save_model (not save_file): it drops duplicates of tied tensors instead of failing.
    save_model(
        model, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "family": meta.family}
    )
    tokenizer.save(directory / TOKENIZER_FILE)
    (directory / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return directory


def save_quantized_model_dir(
    directory: str | Path, loaded: LoadedModel, config: QuantConfig, quantization: dict[str, Any]
) -> Path:
    """Write a model directory holding the quantized `loaded.model` (simulated QuantLinears).

    `quantization` (method, bit config, calibration summary) is added to the provenance.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(loaded.config, indent=2, sort_keys=True) + "\n")
    save_quantized(loaded.model, directory / WEIGHTS_FILE, config)
    loaded.tokenizer.save(directory / TOKENIZER_FILE)
    provenance = {**loaded.meta.provenance, "quantization": quantization}
    meta = replace(loaded.meta, provenance=provenance)
    (directory / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return directory


def is_quantized_file(weights: Path) -> bool:
    """Whether a weights file was written by quant.serialization (it carries a bit map)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return "daptq_format" in (handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{weights}: not a readable safetensors file ({error})") from None


def record_evaluation(directory: str | Path, metrics: dict[str, Any]) -> None:
    """Merge measured evaluation metrics into the manifest's provenance.metrics (daptq.json)."""
    directory = check_model_dir(directory)
    meta = ModelMeta.from_dict(read_json(directory / META_FILE))
    recorded = {**meta.provenance.get("metrics", {}), **metrics}
    meta = replace(meta, provenance={**meta.provenance, "metrics": recorded})
    (directory / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")


def build_for_loading(adapter: FamilyAdapter, config: dict[str, Any]) -> nn.Module:
    """The architecture without its random initialisation, for weights that are loaded next.

    transformers' `no_init_weights` turns torch's and transformers' initialisers into no-ops:
    a 0.42 G int4 model loaded in 6.5 s instead of 13.9 s, with 692 instead of 1404 MB resident
    (skeleton pages that the packed weights replace are never written).
    """
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return adapter.build(config)


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from config.json, load model.safetensors, eval mode, on `device`."""
    directory = check_model_dir(directory)
    meta = ModelMeta.from_dict(read_json(directory / META_FILE))
    config = read_json(directory / CONFIG_FILE)
    adapter = get_family(meta.family)
    weights = directory / WEIGHTS_FILE
    quantized = is_quantized_file(weights)
    if not quantized:  # every tensor checked against config.json before the model is built
        check_checkpoint_tensors(lambda: adapter.build(config), [weights], str(weights), False)
    model = build_for_loading(adapter, config)
    if quantized:
        # A quantized directory: packed codes + bit map + the folded compensation, so it runs
        # as quantized without calibration data.
        model, _ = load_quantized(model, weights)
        tokenizer = model_tokenizer(directory, meta)
        return LoadedModel(model.to(device).eval(), adapter, config, tokenizer, meta)
    try:
        load_model(model, str(weights), strict=True)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ModelError(
            f"{weights}: cannot be loaded into the model of config.json ({error})"
        ) from None
    tokenizer = model_tokenizer(directory, meta)
    return LoadedModel(model.to(device).eval(), adapter, config, tokenizer, meta)


def default_model_dir(family: str) -> Path:
    """The embedded default model of a family (daptq_ros.share finds the installed data)."""
    from daptq_ros.share import share_candidates

    name = f"{family}_default"
    candidates = [folder / "models" / name for folder in share_candidates()]
    for candidate in candidates:
        if (candidate / "daptq.json").is_file():
            return candidate
    raise ModelError(
        f"no embedded default model '{name}' (looked in {', '.join(map(str, candidates))}); "
        "retrain it with scripts/train_default_models.sh or pass --model DIR"
    )
