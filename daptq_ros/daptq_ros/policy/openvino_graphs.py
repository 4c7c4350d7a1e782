"""The two graphs each family exports to OpenVINO, with their example inputs and settings.

- pi0: `prefix` (pixel_values, input_ids, attention_mask -> the backbone's keys and values per
  layer) and `step` (state, noise, timestep, attention_mask, the keys and values -> velocity);
  the runtime runs transformers' Euler loop over the step graph.
- cogact: `prefix` (images, input_ids, attention_mask, state -> the cognition latent z) and
  `step` (noisy, timestep, z -> predicted noise: the DiT head); the runtime runs the family's
  own DDIM loop (policy/ddim.py) over the step graph, with the head's batch doubled when
  classifier-free guidance is on.

Each wrapper holds the model as `model`, so a converted layer is named `__module.model.<name>`
(openvino_export finds the quantized layers by that name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from daptq_ros.policy.batch import Batch
from daptq_ros.policy.inference import VlaPolicy
from daptq_ros.policy.pi0_inputs import prefix_cache
from daptq_ros.policy.preprocess import blank_observation_batch
from daptq_ros.policy.runtime_openvino import (
    COGACT_PREFIX,
    COGACT_STEP,
    PI0_PREFIX,
    PI0_STEP,
    cache_names,
    cogact_inputs,
)


@dataclass
class FamilyGraphs:
    """One family's graphs, traced on `*_example`; `prompt_axes` names each input's axis of
    prompt length (the only axis left dynamic); `settings` go to runtime.json."""

    prefix: nn.Module
    prefix_example: tuple[torch.Tensor, ...]
    prefix_names: list[str]
    step: nn.Module
    step_example: tuple[torch.Tensor, ...]
    step_names: list[str]
    prompt_axes: dict[str, int]
    settings: dict[str, Any]


class GraphModule(nn.Module):
    """A graph to convert: holds the model as `model` (the converted layers' name prefix)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


class PrefixCache(GraphModule):
    """Images and prompt -> the backbone's keys and values of every layer (pi0's step 2)."""

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        views = torch.ones(pixel_values.shape[:2], dtype=torch.bool)
        cache = prefix_cache(self.model, input_ids, pixel_values, views, attention_mask)
        return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))


class DenoiseStep(GraphModule):
    """One flow step: state, noisy actions, time and the prefix's keys and values -> velocity
    (pi0's step 3 without the update, which the runtime does as sample_actions does)."""

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


class CognitionLatent(GraphModule):
    """Images, prompt (its padding columns trimmed) and state -> z (CogactModel.encode)."""

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.encode_tokens(images, input_ids, attention_mask, state)


class NoisePrediction(GraphModule):
    """Noisy chunk, integer timestep and z -> the DiT head's predicted noise."""

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.action_head(noisy, timestep, z)


@contextlib.contextmanager
def traceable_cache() -> Iterator[None]:
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


def _probe_batch(policy: VlaPolicy) -> Batch:
    """A blank observation as a model batch (the shapes the converter traces)."""
    return blank_observation_batch(policy.loaded.meta, policy.loaded.tokenizer)


def pi0_graphs(policy: VlaPolicy) -> FamilyGraphs:
    """pi0's prefix and flow-step graphs."""
    model = policy.model
    inputs = policy.loaded.adapter._inputs(model, _probe_batch(policy))
    prefix = PrefixCache(model)
    prefix_example = tuple(inputs[name] for name in PI0_PREFIX)
    with torch.no_grad():
        cache = prefix(*prefix_example)  # the step graph's example keys and values
    noise = torch.zeros(1, model.config.chunk_size, model.config.max_action_dim)
    step_example = (inputs["state"], noise, torch.ones(1), inputs["attention_mask"], *cache)
    layers = len(cache) // 2
    names = cache_names(layers)
    return FamilyGraphs(
        prefix,
        prefix_example,
        list(PI0_PREFIX),
        DenoiseStep(model),
        step_example,
        [*PI0_STEP, *names],
        {"input_ids": 1, "attention_mask": 1} | dict.fromkeys(names, 2),
        {
            "num_steps": policy.num_steps or model.config.num_inference_steps,
            "cache_layers": layers,
        },
    )


def cogact_graphs(policy: VlaPolicy) -> FamilyGraphs:
    """cogact's cognition-latent and noise-prediction graphs; the DDIM settings."""
    model = policy.model
    config = model.config
    inputs = cogact_inputs(_probe_batch(policy))
    prefix = CognitionLatent(model)
    prefix_example = tuple(inputs[name] for name in COGACT_PREFIX)
    with torch.no_grad():
        z = prefix(*prefix_example)
    batch = 1 if config.guidance_scale == 1.0 else 2  # guided: conditional + unconditional
    noisy = torch.zeros(batch, config.horizon, config.action_dim)
    step_example = (noisy, torch.zeros(batch, dtype=torch.long), z.expand(batch, -1, -1))
    return FamilyGraphs(
        prefix,
        prefix_example,
        list(COGACT_PREFIX),
        NoisePrediction(model),
        step_example,
        list(COGACT_STEP),
        {"input_ids": 1, "attention_mask": 1},
        {
            "num_steps": min(policy.num_steps or config.sample_steps, config.train_timesteps),
            "train_timesteps": config.train_timesteps,
            "guidance_scale": config.guidance_scale,
            "horizon": config.horizon,
            "action_dim": config.action_dim,
        },
    )


def family_graphs(policy: VlaPolicy) -> FamilyGraphs:
    """The graphs of the policy's family."""
    family = policy.loaded.meta.family
    return {"pi0": pi0_graphs, "cogact": cogact_graphs}[family](policy)
