"""VLA policies behind one contract: families, model directories, inference and training.

The contract (numpy only) is imported eagerly; everything that needs torch and transformers
loads on first use, so the simulator and the nodes can use `ActionChunk` / `Policy` cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

from daptq_ros.policy.contract import ACTION_SPACES, ActionChunk, Policy

# Public name -> the submodule of daptq_ros.policy that defines it.
_LAZY = {
    "VlaPolicy": "inference",
    "load_policy": "inference",
    "LoadedModel": "model_dir",
    "ModelMeta": "model_dir",
    "load_model_dir": "model_dir",
    "save_model_dir": "model_dir",
    "Normalizer": "normalize",
    "InstructionTokenizer": "tokenizer",
    "FAMILIES": "families",
    "get_family": "families",
    "TrainConfig": "training",
    "TrainResult": "training",
    "train": "training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"daptq_ros.policy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'daptq_ros.policy' has no attribute {name!r}")


__all__ = ["ACTION_SPACES", "ActionChunk", "Policy", *sorted(_LAZY)]
