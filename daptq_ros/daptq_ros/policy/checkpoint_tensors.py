"""Compare a checkpoint's tensors with the model its config builds, before anything is built.

A tensor the model has and the checkpoint lacks would stay at its random initialisation: on a
robot that is a safety defect, so it is refused, as are tensors the model does not have and
tensors of another shape. The check costs no memory: the model is built on the meta device
(shapes only) and the safetensors headers give the checkpoint's names and shapes without
reading a tensor, so a checkpoint that does not fit is refused before gigabytes are built.

Checkpoint names are mapped as transformers maps them on load (its checkpoint conversion
mapping: pi0's original layout `paligemma_with_expert.*`, which LeRobot's checkpoints use too,
becomes `model.vlm.*` / `model.dit.*`), so the check sees what loading will see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from daptq_ros.errors import ModelError

SHOWN = 3  # names quoted per kind of mismatch; the count gives the rest


@dataclass(frozen=True)
class TensorMismatch:
    """How a checkpoint's tensors differ from the model's (model names; empty: they match)."""

    missing: tuple[str, ...]  # the model has them, the checkpoint does not
    unexpected: tuple[str, ...]  # the checkpoint has them (as named on load), the model not
    reshaped: tuple[str, ...]  # "name: checkpoint (a, b) vs model (c, d)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)

    def describe(self) -> str:
        """'3 missing (a, b, c), 1 of another shape (d: ...)': the first few names of each kind."""
        parts = []
        for label, names in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("of another shape", self.reshaped),
        ):
            if names:
                shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
                parts.append(f"{len(names)} {label} ({shown})")
        return "; ".join(parts)


def safetensors_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the safetensors `files`, from their headers only."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError) as error:
            raise ModelError(f"{path}: not a readable safetensors file ({error})") from None
    return shapes


def meta_model(build: Callable[[], nn.Module]) -> nn.Module:
    """The module `build` makes, on the meta device: shapes without memory or initialisation."""
    with torch.device("meta"):
        return build()


def loaded_names(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """Checkpoint name -> the model's name for it, as transformers renames keys on load."""
    from transformers import PreTrainedModel

    names = list(names)
    if not isinstance(model, PreTrainedModel):
        return {name: name for name in names}
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    expected = model.state_dict()
    prefix = model.base_model_prefix or None
    return {
        name: rename_source_key(name, renamings, converters, prefix, expected)[0] for name in names
    }


def shared_names(model: nn.Module) -> dict[str, set[str]]:
    """Name -> every name of the same tensor (tied weights are saved under one name)."""
    groups: dict[int, set[str]] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        groups.setdefault(id(tensor), set()).add(name)
    return {name: groups[id(tensor)] for name, tensor in named}


def tensor_mismatch(
    model: nn.Module, checkpoint: dict[str, tuple[int, ...]], as_loaded: bool = True
) -> TensorMismatch:
    """How the checkpoint's tensors (name -> shape) differ from the (meta) model's.

    `as_loaded`: the checkpoint is a transformers one, whose names transformers maps on load;
    False for files written from the model's own state dict (a model directory of ours).
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    renamed = loaded_names(model, checkpoint) if as_loaded else {n: n for n in checkpoint}
    found = {renamed[name]: shape for name, shape in checkpoint.items()}
    shared = shared_names(model)
    missing = sorted(n for n in expected if not any(alias in found for alias in shared.get(n, {n})))
    unexpected = sorted(n for n in found if n not in expected)
    reshaped = sorted(
        f"{name}: checkpoint {found[name]} vs model {shape}"
        for name, shape in expected.items()
        if name in found and found[name] != shape
    )
    return TensorMismatch(tuple(missing), tuple(unexpected), tuple(reshaped))


def check_checkpoint_tensors(
    build: Callable[[], nn.Module], files: Iterable[Path], source: str, as_loaded: bool = True
) -> None:
    """Refuse (ModelError) a checkpoint whose tensors do not fill the model `build` makes
    (`as_loaded`: see tensor_mismatch)."""
    mismatch = tensor_mismatch(meta_model(build), safetensors_shapes(files), as_loaded)
    if mismatch:
        raise ModelError(
            f"{source}: the weights do not fit the model its config.json describes: "
            f"{mismatch.describe()}; nothing was loaded (no tensor is ever left at random "
            "initialisation): use the checkpoint's own config.json, or re-save the model"
        )
