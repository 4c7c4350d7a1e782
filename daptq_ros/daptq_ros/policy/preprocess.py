"""Observation arrays -> model tensors: the one preprocessing path of training and inference."""

from __future__ import annotations

import numpy as np
import torch

from daptq_ros.policy.batch import Batch
from daptq_ros.policy.contract import check_image, check_instruction, check_state
from daptq_ros.policy.images import model_image
from daptq_ros.policy.model_meta import ModelMeta
from daptq_ros.policy.normalize import Normalizer
from daptq_ros.policy.tokenizer import InstructionTokenizer


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """Images [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]: uint8 ones over 255, float ones (the
    model's resized views, images.model_image) as they are."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()


def make_batch(
    images: np.ndarray,
    instructions: list[str],
    states: np.ndarray,
    tokenizer: InstructionTokenizer,
    normalizer: Normalizer,
) -> Batch:
    """A model Batch from images [B, H, W, 3] (uint8, or floats in [0, 1]), instruction strings
    and raw states [B, S]."""
    ids, mask = tokenizer.encode(instructions)
    return Batch(
        images=image_tensor(images),
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        state=torch.from_numpy(normalizer.normalize_state(np.asarray(states, dtype=np.float32))),
    )


def observation_batch(
    meta: ModelMeta,
    tokenizer: InstructionTokenizer,
    image: np.ndarray,
    instruction: str,
    state: np.ndarray,
) -> Batch:
    """One observation, validated, as a model batch of one (on the CPU)."""
    # Each view brought to the model's size as its checkpoint's processor does (float32).
    image = model_image(check_image(image), meta.image_size, meta.num_views, meta.image_resize)
    return make_batch(
        image[None],
        [check_instruction(instruction)],
        check_state(state, meta.normalizer.state_dim)[None],
        tokenizer,
        meta.normalizer,
    )


def blank_observation_batch(meta: ModelMeta, tokenizer: InstructionTokenizer) -> Batch:
    """A black image, the prompt "probe" and a zero state: a batch of the model's own shapes
    (the OpenVINO export traces one, its runtime warms up on one)."""
    blank = np.zeros((*meta.image_size, 3), np.uint8)
    return observation_batch(meta, tokenizer, blank, "probe", np.zeros(meta.normalizer.state_dim))
