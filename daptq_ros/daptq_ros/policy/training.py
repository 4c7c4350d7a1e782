"""Behaviour cloning of a VLA family from in-memory demonstrations: seeded, resumable, exported.

Each sample is the observation at step t and the action chunk actions[t : t+H], padded past the
episode's end by repeating its last action and masked there in the loss. Training uses random
per-view shifts of up to `shift_pixels` (SIM_NOTES: helped), AdamW with linear warm-up and
cosine decay, gradient clipping, and an EMA of the weights, which is what gets exported.

Determinism: weights are initialised from `seed`; batches and shifts come from a numpy
Generator, noise and diffusion times from a torch Generator, both seeded and both saved in
each checkpoint. A run resumed from a checkpoint therefore reproduces the weights of an
uninterrupted run with the same seed (same device and thread count). Checkpoints hold tensors
in safetensors (model, EMA, optimizer moments, the torch RNG state) and JSON (step, numpy RNG
state, settings): no pickle. The thread count is left to the caller (torch.set_num_threads).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from daptq_ros.bags.state import StateSpec
from daptq_ros.errors import ModelError, PolicyError
from daptq_ros.policy.families import Batch, FamilyAdapter, get_family
from daptq_ros.policy.model_dir import load_model_dir, save_model_dir
from daptq_ros.policy.model_meta import ModelMeta
from daptq_ros.policy.normalize import Normalizer
from daptq_ros.policy.preprocess import image_tensor
from daptq_ros.policy.tokenizer import InstructionTokenizer

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
# Settings a resumed run may change: more steps extend the cosine schedule from where it is.
RESUMABLE = ("steps", "checkpoint_every")


class Demonstration(Protocol):
    """One episode: what the camera saw, the instruction, the states and the applied actions."""

    images: np.ndarray  # [T, H, V*W, 3] uint8 RGB, V views tiled horizontally
    instruction: str
    states: np.ndarray  # [T, S] float
    actions: np.ndarray  # [T, D] float, the action applied at each step


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (saved with each checkpoint)."""

    family: str
    dt: float  # seconds between two actions of a chunk
    action_names: tuple[str, ...]
    action_space: str = "ee_delta"
    state_source: str = "ee_position_gripper"  # how the state is built (bags.state)
    state_names: tuple[str, ...] = ("x", "y", "z", "gripper")
    action_norm: str = "min_max"  # or "mean_std" (policy.normalize)
    size: str = "default"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    horizon: int = 8
    num_views: int = 2
    max_text_length: int = 16
    steps: int = 10_000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    shift_pixels: int = 4
    checkpoint_every: int = 500
    seed: int = 0
    dim_weights: tuple[float, ...] | None = None
    # Fine-tune: start from this model directory's weights, config, tokenizer and statistics
    # (model_overrides then change settings of its config that keep the weights' shapes).
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["action_names"] = list(self.action_names)
        data["state_names"] = list(self.state_names)
        data["dim_weights"] = None if self.dim_weights is None else list(self.dim_weights)
        return data


@dataclass
class TrainResult:
    """What a call to train() did."""

    step: int  # the last completed optimiser step
    losses: list[float]  # one per step run by this call
    seconds_per_step: float
    checkpoint_dir: Path
    model_dir: Path | None  # None when stopped early by `stop_at`


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to config.lr, then cosine decay to zero at config.steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _check_episodes(episodes: Sequence[Demonstration], num_views: int) -> None:
    if not episodes:
        raise PolicyError("no demonstrations to train on; collect some with `daptq collect`")
    first = episodes[0]
    for index, episode in enumerate(episodes):
        images, states, actions = episode.images, episode.states, episode.actions
        where = f"demonstration {index}"
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise PolicyError(f"{where}: images must be [T, H, W, 3] uint8, got {images.shape}")
        if images.shape[1:] != first.images.shape[1:]:
            raise PolicyError(f"{where}: image size {images.shape[1:3]} differs from the first")
        if images.shape[2] % num_views:
            raise PolicyError(
                f"{where}: image width {images.shape[2]} is not a multiple of {num_views} views"
            )
        if states.ndim != 2 or actions.ndim != 2:
            raise PolicyError(f"{where}: states and actions must be [T, S] and [T, D] arrays")
        if not len(images) == len(states) == len(actions) > 0:
            raise PolicyError(
                f"{where}: {len(images)} images, {len(states)} states and {len(actions)} "
                "actions; every step needs one of each"
            )
        if states.shape[1] != first.states.shape[1] or actions.shape[1] != first.actions.shape[1]:
            raise PolicyError(f"{where}: state or action width differs from the first episode")
        if not (np.isfinite(states).all() and np.isfinite(actions).all()):
            raise PolicyError(f"{where}: states or actions hold NaN or inf")
        if not isinstance(episode.instruction, str) or not episode.instruction.strip():
            raise PolicyError(f"{where}: the instruction is empty")


class ChunkSampler:
    """Random (observation, action chunk) batches from demonstrations, with shift augmentation."""

    def __init__(
        self,
        episodes: Sequence[Demonstration],
        tokenizer: InstructionTokenizer,
        normalizer: Normalizer,
        horizon: int,
        num_views: int,
    ) -> None:
        self.episodes = episodes
        self.num_views = num_views
        self.horizon = horizon
        ids, masks = tokenizer.encode([e.instruction for e in episodes])
        self.input_ids, self.attention_mask = torch.from_numpy(ids), torch.from_numpy(masks)
        self.states = [normalizer.normalize_state(e.states) for e in episodes]
        # Chunks past the end repeat the last action: the arm holds still, as the expert did.
        self.actions = [
            normalizer.normalize_actions(
                np.concatenate([e.actions, np.repeat(e.actions[-1:], horizon - 1, axis=0)])
            )
            for e in episodes
        ]
        self.lengths = np.array([len(e.actions) for e in episodes])
        self.index = np.concatenate(
            [np.stack([np.full(n, i), np.arange(n)], axis=1) for i, n in enumerate(self.lengths)]
        )

    def _shift(self, images: np.ndarray, rng: np.random.Generator, pixels: int) -> np.ndarray:
        """Shift each view of each image by up to `pixels` (edge-padded), independently."""
        batch, height, width, _ = images.shape
        view = width // self.num_views
        views = images.reshape(batch, height, self.num_views, view, 3)
        padded = np.pad(views, ((0, 0), (pixels, pixels), (0, 0), (pixels, pixels), (0, 0)), "edge")
        offsets = rng.integers(0, 2 * pixels + 1, size=(batch, self.num_views, 2))
        shifted = np.empty_like(views)
        for b in range(batch):
            for v in range(self.num_views):
                dy, dx = offsets[b, v]
                shifted[b, :, v] = padded[b, dy : dy + height, v, dx : dx + view]
        return shifted.reshape(images.shape)

    def sample(self, rng: np.random.Generator, batch_size: int, shift_pixels: int) -> Batch:
        """A training batch of `batch_size` random steps."""
        rows = self.index[rng.integers(0, len(self.index), size=batch_size)]
        images = np.stack([self.episodes[e].images[t] for e, t in rows])
        if shift_pixels:
            images = self._shift(images, rng, shift_pixels)
        offsets = np.arange(self.horizon)
        chunks = np.stack([self.actions[e][t : t + self.horizon] for e, t in rows])
        valid = rows[:, 1:2] + offsets[None, :] < self.lengths[rows[:, 0]][:, None]
        return Batch(
            images=image_tensor(images),
            input_ids=self.input_ids[rows[:, 0]],
            attention_mask=self.attention_mask[rows[:, 0]],
            state=torch.from_numpy(np.stack([self.states[e][t] for e, t in rows])),
            actions=torch.from_numpy(chunks),
            action_mask=torch.from_numpy(valid),
        )


def _model_setup(
    episodes: Sequence[Demonstration], config: TrainConfig
) -> tuple[FamilyAdapter, dict[str, Any], InstructionTokenizer, ModelMeta]:
    """Adapter, family config, tokenizer and daptq.json content; all derived from the data."""
    adapter = get_family(config.family)
    tokenizer = InstructionTokenizer.train(
        (e.instruction for e in episodes), max_length=config.max_text_length
    )
    normalizer = Normalizer.fit(
        np.concatenate([e.states for e in episodes]),
        np.concatenate([e.actions for e in episodes]),
        config.action_norm,
    )
    image_size = tuple(episodes[0].images.shape[1:3])
    family_config = adapter.default_config(
        size=config.size,
        vocab_size=tokenizer.vocab_size,
        max_text_length=config.max_text_length,
        state_dim=normalizer.state_dim,
        action_dim=normalizer.action_dim,
        horizon=config.horizon,
        image_size=image_size,
        num_views=config.num_views,
        overrides=config.model_overrides,
    )
    meta = ModelMeta(
        family=config.family,
        action_space=config.action_space,
        action_names=config.action_names,
        horizon=config.horizon,
        dt=config.dt,
        image_size=image_size,
        num_views=config.num_views,
        normalizer=normalizer,
        state_source=config.state_source,
        state_names=config.state_names,
    )
    return adapter, family_config, tokenizer, meta


def _init_from_model_dir(
    episodes: Sequence[Demonstration], config: TrainConfig
) -> tuple[FamilyAdapter, dict[str, Any], InstructionTokenizer, ModelMeta, nn.Module]:
    """What _model_setup gives, and the weights, taken from `config.init_from` (fine-tuning).

    The model keeps its tokenizer and normalisation statistics, so the data must match it in
    family, action space and names, timing and camera layout; a ModelError names each
    difference. The horizon may change where the family's weights do not depend on it (pi0).
    """
    loaded = load_model_dir(config.init_from)
    meta = loaded.meta
    wanted = {
        "family": (meta.family, config.family),
        "action_space": (meta.action_space, config.action_space),
        "action_names": (meta.action_names, tuple(config.action_names)),
        "state": (meta.state_spec, StateSpec(config.state_source, config.state_names)),
        "dt": (meta.dt, config.dt),
        "num_views": (meta.num_views, config.num_views),
        "image_size": (meta.image_size, tuple(episodes[0].images.shape[1:3])),
    }
    differences = [f"{k} {m!r} vs {d!r}" for k, (m, d) in wanted.items() if m != d]
    if differences:
        raise ModelError(
            f"{config.init_from}: cannot fine-tune from this model, it differs from the data "
            f"and settings ({'; '.join(differences)}); train from scratch or pick a model "
            "made for this data"
        )
    meta = replace(meta, provenance={}, horizon=config.horizon)
    overrides = dict(config.model_overrides)
    if config.horizon != loaded.meta.horizon:  # a new chunk length, the same weights
        overrides.update(loaded.adapter.horizon_setting(config.horizon))
    if not overrides:
        return loaded.adapter, loaded.config, loaded.tokenizer, meta, loaded.model
    family_config = {**loaded.config, **overrides}
    try:
        model = loaded.adapter.build(family_config)
    except ModelError as error:
        raise ModelError(f"model settings {config.model_overrides}: {error}") from None
    try:
        model.load_state_dict(loaded.model.state_dict())
    except RuntimeError:
        raise ModelError(
            f"{config.init_from}: the model settings {sorted(overrides)} change "
            "the shapes of its weights, so it cannot be fine-tuned with them; override only "
            "settings that keep the weights (e.g. training or sampling ones) or train from "
            "scratch"
        ) from None
    return loaded.adapter, family_config, loaded.tokenizer, meta, model


class _Trainer:
    """The mutable training state: model, EMA, optimizer, RNGs, step; and its checkpoints."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.model = model.to(device).train()
        self.ema = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            # One fused kernel instead of ~10 small ops per tensor: ~10 ms less per CPU step.
            fused=device.type in ("cpu", "cuda"),
        )
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    def update_ema(self) -> None:
        """EMA with a warm-up: decay min(ema_decay, (1 + step) / (10 + step))."""
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                self.ema[name].lerp_(param.detach(), 1.0 - decay)

    def ema_model(self) -> nn.Module:
        """The model with its parameters replaced by their EMA (in place: call last)."""
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(self.ema[name])
        return self.model.eval()

    def save(self, directory: Path) -> None:
        """Write the checkpoint atomically (temporary files, then rename)."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                tensors[f"optim.{names[id(param)]}.{key}"] = value
        tensors["rng.torch"] = self.generator.get_state()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        state = {
            "step": self.step,
            "numpy_rng": self.rng.bit_generator.state,
            "train_config": self.config.to_dict(),
        }
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / (CHECKPOINT_TENSORS + ".tmp")))
        (directory / (CHECKPOINT_STATE + ".tmp")).write_text(json.dumps(state, indent=2))
        os.replace(directory / (CHECKPOINT_TENSORS + ".tmp"), directory / CHECKPOINT_TENSORS)
        os.replace(directory / (CHECKPOINT_STATE + ".tmp"), directory / CHECKPOINT_STATE)

    def load(self, directory: Path) -> None:
        """Restore everything save() wrote; a ModelError if it came from other settings."""
        state = json.loads((directory / CHECKPOINT_STATE).read_text())
        saved, current = state["train_config"], self.config.to_dict()
        changed = sorted(k for k in current if k not in RESUMABLE and saved.get(k) != current[k])
        if changed:
            raise ModelError(
                f"{directory}: the checkpoint was made with other training settings "
                f"({', '.join(changed)}); resume with the same settings or start a new "
                "checkpoint directory"
            )
        tensors = load_file(str(directory / CHECKPOINT_TENSORS))
        device = next(self.model.parameters()).device
        self.model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        for name, param in self.model.named_parameters():
            self.ema[name] = tensors[f"ema.{name}"].to(device)
            moments = {
                key.rsplit(".", 1)[1]: value.to(device)
                for key, value in tensors.items()
                if key.startswith(f"optim.{name}.") and "." not in key[len(f"optim.{name}.") :]
            }
            if moments:
                if not self.optimizer.defaults["fused"]:  # unfused AdamW counts steps on the CPU
                    moments["step"] = moments["step"].cpu()
                self.optimizer.state[param] = moments
        self.generator.set_state(tensors["rng.torch"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.step = int(state["step"])


def train(
    episodes: Sequence[Demonstration],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    provenance: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train `config.family` on `episodes`; export the EMA weights to the model dir `out_dir`.

    Checkpoints go to `checkpoint_dir` (default: `<out_dir>.checkpoint` beside it) every
    `checkpoint_every` steps; `resume=True` continues from the latest one (with more `steps`
    if asked: the schedule then follows the new total). `config.init_from` fine-tunes an
    existing model directory instead of starting from random weights. `stop_at` ends the
    run early at that step (checkpointed, not exported). `provenance` (command, data seed, git
    revision, ...) is stored in daptq.json with the training settings and final loss.
    """
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir or out_dir.with_name(out_dir.name + ".checkpoint"))
    device = torch.device(device)
    _check_episodes(episodes, config.num_views)
    if config.init_from is None:
        adapter, family_config, tokenizer, meta = _model_setup(episodes, config)
        torch.manual_seed(config.seed)
        model = adapter.build(family_config)
    else:
        adapter, family_config, tokenizer, meta, model = _init_from_model_dir(episodes, config)
    if config.dim_weights is not None and len(config.dim_weights) != meta.normalizer.action_dim:
        raise ModelError(
            f"dim_weights has {len(config.dim_weights)} values for "
            f"{meta.normalizer.action_dim} action dimensions"
        )
    trainer = _Trainer(model, config, device)
    if resume:
        if not (checkpoint_dir / CHECKPOINT_STATE).is_file():
            raise ModelError(f"{checkpoint_dir}: no checkpoint to resume from; drop --resume")
        trainer.load(checkpoint_dir)
    sampler = ChunkSampler(episodes, tokenizer, meta.normalizer, config.horizon, config.num_views)
    weights = (
        None if config.dim_weights is None else torch.tensor(config.dim_weights, device=device)
    )
    last = config.steps if stop_at is None else min(stop_at, config.steps)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(
        total=last, initial=trainer.step, desc=f"train {config.family}", disable=not progress
    )
    while trainer.step < last:
        for group in trainer.optimizer.param_groups:
            group["lr"] = learning_rate(config, trainer.step)
        batch = sampler.sample(trainer.rng, config.batch_size, config.shift_pixels).to(device)
        loss = adapter.loss(trainer.model, batch, weights, trainer.generator)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainer.model.parameters(), config.grad_clip)
        trainer.optimizer.step()
        trainer.step += 1
        trainer.update_ema()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if trainer.step % config.checkpoint_every == 0 or trainer.step == last:
            trainer.save(checkpoint_dir)
    bar.close()
    seconds = (time.perf_counter() - started) / max(1, len(losses))
    if trainer.step < config.steps:
        return TrainResult(trainer.step, losses, seconds, checkpoint_dir, None)
    record = dict(provenance or {})
    record["training"] = config.to_dict()
    record["metrics"] = {
        **record.get("metrics", {}),
        "final_train_loss": float(np.mean(losses[-100:])) if losses else None,
        "steps": trainer.step,
    }
    meta = replace(meta, provenance=record)
    save_model_dir(out_dir, trainer.ema_model(), family_config, tokenizer, meta)
    return TrainResult(trainer.step, losses, seconds, checkpoint_dir, out_dir)
