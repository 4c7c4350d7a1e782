"""VlaPolicy: the Policy contract over a model directory (preprocess, sample, unnormalise)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from daptq_ros.policy.contract import ActionChunk, ChunkPrefix, stage_times
from daptq_ros.policy.families import Batch
from daptq_ros.policy.model_dir import LoadedModel, load_model_dir
from daptq_ros.policy.preprocess import observation_batch
from daptq_ros.policy.rtc import rtc_guide


class VlaPolicy:
    """Image + instruction + state -> ActionChunk, deterministic for a given seed."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device = "cpu",
        num_steps: int | None = None,
        seed: int = 0,
    ) -> None:
        self.loaded = loaded
        self.device = torch.device(device)
        self.num_steps = num_steps
        self.seed = seed
        self.last_timing: dict[str, float] = {}  # s per stage of the last predict()
        loaded.model.to(self.device).eval()

    @property
    def model(self) -> torch.nn.Module:
        """The underlying nn.Module (quantize it in place, or swap it, between calls)."""
        return self.loaded.model

    @property
    def state_dim(self) -> int:
        """Length of the state vector predict() expects."""
        return self.loaded.meta.normalizer.state_dim

    def preprocess(self, image: np.ndarray, instruction: str, state: np.ndarray) -> Batch:
        """Validate one observation and turn it into a model batch of one, on the device."""
        loaded = self.loaded
        batch = observation_batch(loaded.meta, loaded.tokenizer, image, instruction, state)
        return batch.to(self.device)

    @property
    def chunk_guidance(self) -> str:
        """ "rtc" when predict() can fit a chunk to a ChunkPrefix (flow matching), else ""."""
        return "rtc" if hasattr(self.loaded.adapter, "sample_guided") else ""

    def predict(
        self,
        image: np.ndarray,
        instruction: str,
        state: np.ndarray,
        seed: int | None = None,
        prefix: ChunkPrefix | None = None,
    ) -> ActionChunk:
        """The next action chunk; the same inputs and seed always give the same chunk.

        With a `prefix` (and a flow-matching family), the chunk is RTC-guided to continue it.
        """
        started = time.perf_counter()
        batch = self.preprocess(image, instruction, state)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        adapter, meta, method = self.loaded.adapter, self.loaded.meta, ""
        prepared = time.perf_counter()
        if prefix is not None and self.chunk_guidance:
            guide = rtc_guide(
                prefix.actions, prefix.delay, meta.normalizer.normalize_actions, prefix.jacobian
            )
            normalised, method = adapter.sample_guided(
                self.loaded.model, batch, guide, self.num_steps, generator
            )
        else:
            with torch.inference_mode():
                normalised = adapter.sample(self.loaded.model, batch, self.num_steps, generator)
        sampled = time.perf_counter()
        actions = meta.normalizer.unnormalize_actions(normalised[0].float().cpu().numpy())
        chunk = ActionChunk(actions, meta.dt, meta.action_space, meta.action_names, method)
        self.last_timing = stage_times(started, prepared, sampled, time.perf_counter())
        return chunk


def load_policy(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    num_steps: int | None = None,
    seed: int = 0,
) -> VlaPolicy:
    """A VlaPolicy over the model directory `model_dir`."""
    return VlaPolicy(load_model_dir(model_dir, device), device, num_steps, seed)
