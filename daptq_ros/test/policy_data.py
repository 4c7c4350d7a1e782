"""Synthetic demonstrations and batches for the policy tests: actions follow the state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from daptq_ros.policy.families import Batch, get_family

IMAGE_SIZE = (16, 32)  # two 16x16 views tiled horizontally
STATE_DIM = 3
ACTION_DIM = 2
HORIZON = 4
INSTRUCTIONS = ("Push the puck to the goal.", "reach the goal", "open the drawer!")


@dataclass
class Episode:
    """The plain demonstration object training accepts."""

    images: np.ndarray
    instruction: str
    states: np.ndarray
    actions: np.ndarray


def expert(states: np.ndarray) -> np.ndarray:
    """The learnable rule: actions depend on the state only."""
    return np.stack([np.tanh(states[:, 0] - states[:, 1]), 0.5 * states[:, 2]], axis=1)


def synthetic_episodes(count: int = 4, length: int = 10, seed: int = 0) -> list[Episode]:
    """`count` episodes with random images and states, and actions = expert(states)."""
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(count):
        states = rng.normal(size=(length, STATE_DIM)).astype(np.float32)
        images = rng.integers(0, 256, size=(length, *IMAGE_SIZE, 3), dtype=np.uint8)
        instruction = INSTRUCTIONS[index % len(INSTRUCTIONS)]
        episodes.append(Episode(images, instruction, states, expert(states).astype(np.float32)))
    return episodes


def tiny_model(family: str, vocab_size: int = 12, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised tiny model of `family` and its config."""
    adapter = get_family(family)
    config = adapter.default_config(
        size="tiny",
        vocab_size=vocab_size,
        max_text_length=6,
        state_dim=STATE_DIM,
        action_dim=ACTION_DIM,
        horizon=HORIZON,
        image_size=IMAGE_SIZE,
        num_views=2,
    )
    torch.manual_seed(seed)
    return adapter.build(config), config


def synthetic_batch(size: int = 8, seed: int = 0, vocab_size: int = 12) -> Batch:
    """A normalised training batch whose action chunks follow expert(state)."""
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn(size, STATE_DIM, generator=generator)
    action = torch.from_numpy(expert(state.numpy())).clamp(-1, 1)
    return Batch(
        images=torch.rand(size, 3, *IMAGE_SIZE, generator=generator),
        input_ids=torch.randint(2, vocab_size, (size, 6), generator=generator),
        attention_mask=torch.ones(size, 6, dtype=torch.long),
        state=state,
        actions=action[:, None, :].expand(size, HORIZON, ACTION_DIM).contiguous(),
        action_mask=torch.ones(size, HORIZON, dtype=torch.bool),
    )
