"""The OpenVINO runtime: run a pi0 or cogact model that `daptq quantize --runtime openvino`
exported.

The model directory's `openvino/` holds two graphs (policy/openvino_graphs.py), their `.bin`
weights and `runtime.json` (activation group, sampler settings, how each layer is held;
policy/openvino_export.py writes them). `OpenVinoPolicy` runs the prefix graph once per chunk
and the step graph once per denoising step, in the family's own loop:
- pi0: Euler updates in float32 exactly as transformers' `PI0ForConditionalGeneration
  .sample_actions` does; the keys and values pass from one graph to the other without a copy;
- cogact: the family's DDIM loop (policy/ddim.py), the step graph as its noise head.
The torch model is never built, and neither transformers' modeling code nor torchao is
imported: only the directory's config, tokenizer and normalisation (policy/model_meta.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daptq_ros.errors import ModelError
from daptq_ros.policy.batch import Batch, trim_padding
from daptq_ros.policy.contract import ActionChunk, ChunkPrefix, stage_times
from daptq_ros.policy.ddim import ddim_sample, squared_cosine_alphas_cumprod
from daptq_ros.policy.file_pages import release_file_pages
from daptq_ros.policy.model_meta import ModelMeta, read_model_files
from daptq_ros.policy.pi0_inputs import pi0_action_dim, pi0_inputs
from daptq_ros.policy.preprocess import blank_observation_batch, observation_batch
from daptq_ros.policy.rtc import RtcGuide, euler_flow, rtc_guide
from daptq_ros.policy.tokenizer import InstructionTokenizer

RUNTIME_DIR = "openvino"
PREFIX_FILE = "prefix.xml"
STEP_FILE = "step.xml"
RUNTIME_FILE = "runtime.json"
PI0_PREFIX = ("pixel_values", "input_ids", "attention_mask")
PI0_STEP = ("state", "noise", "timestep", "attention_mask")  # then the cache's tensors
COGACT_PREFIX = ("images", "input_ids", "attention_mask", "state")
COGACT_STEP = ("noisy", "timestep", "z")


def cache_names(layers: int) -> list[str]:
    """The step graph's cache inputs: key_0, value_0, key_1, ... (the prefix's outputs)."""
    return [f"{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def cogact_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The cogact prefix graph's inputs: the batch with the prompt's padding columns trimmed
    (CogactModel.encode trims them the same way)."""
    input_ids, text_mask = trim_padding(batch.input_ids, batch.attention_mask)
    return {
        "images": batch.images,
        "input_ids": input_ids,
        "attention_mask": text_mask,
        "state": batch.state,
    }


def has_openvino_artefact(directory: str | Path) -> bool:
    """Whether `directory` holds an exported OpenVINO model."""
    return (Path(directory) / RUNTIME_DIR / RUNTIME_FILE).is_file()


def weight_files(directory: str | Path) -> list[Path]:
    """The exported graphs' weight files."""
    folder = Path(directory) / RUNTIME_DIR
    return [(folder / name).with_suffix(".bin") for name in (PREFIX_FILE, STEP_FILE)]


@dataclass(frozen=True)
class ExportedModel:
    """What the runtime reads besides the graphs: daptq.json, the PI0 config, the tokenizer."""

    meta: ModelMeta
    config: Any  # transformers' PI0Config for pi0; None for cogact (runtime.json has its sampler)
    tokenizer: InstructionTokenizer


class OpenVinoPolicy:
    """The Policy contract on an exported OpenVINO model (the torch model is never built).

    Preprocessing is VlaPolicy's (policy.preprocess.observation_batch) and the noise is drawn
    as VlaPolicy draws it, so the same observation and seed give the simulated policy's chunk.
    Loading runs one chunk, so that the plugin repacks every weight, then releases the
    exported files' pages (see release_file_pages): `released_mb` says how much.
    """

    runtime = "openvino"

    def __init__(
        self, loaded: ExportedModel, directory: Path, threads: int | None, seed: int = 0
    ) -> None:
        import openvino as ov

        self.loaded, self.seed = loaded, seed
        self.last_timing: dict[str, float] = {}  # s per stage of the last predict()
        self.settings = json.loads((directory / RUNTIME_FILE).read_text())
        self.num_steps = int(self.settings["num_steps"])
        properties = {
            "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(self.settings["dynamic_quantization_group"]),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            properties["INFERENCE_NUM_THREADS"] = str(threads)
        core = ov.Core()
        started = time.perf_counter()
        prefix = core.compile_model(str(directory / PREFIX_FILE), "CPU", properties)
        step = core.compile_model(str(directory / STEP_FILE), "CPU", properties)
        self.prefix, self.step = prefix.create_infer_request(), step.create_infer_request()
        if loaded.meta.family == "cogact":  # the DDIM schedule the head was trained on
            self.alphas = squared_cosine_alphas_cumprod(int(self.settings["train_timesteps"]))
        else:  # pi0: the step graph's inputs for the prefix's keys and values
            self.cache_inputs = cache_names(int(self.settings["cache_layers"]))
        files = weight_files(directory.parent)
        self.weight_bytes = sum(f.stat().st_size for f in files)
        self.sample(blank_observation_batch(loaded.meta, loaded.tokenizer), seed)
        self.compile_s = time.perf_counter() - started  # compiling and the warm-up chunk
        self.released_mb = release_file_pages(files) / 1e6

    @property
    def state_dim(self) -> int:
        """Length of the state vector predict() expects."""
        return self.loaded.meta.normalizer.state_dim

    def preprocess(self, image: np.ndarray, instruction: str, state: np.ndarray) -> Batch:
        """Validate one observation and turn it into a model batch of one."""
        loaded = self.loaded
        return observation_batch(loaded.meta, loaded.tokenizer, image, instruction, state)

    @property
    def chunk_guidance(self) -> str:
        """ "rtc" when predict() can fit a chunk to a ChunkPrefix (pi0), else ""."""
        return "rtc" if self.loaded.meta.family == "pi0" else ""

    def sample(
        self, batch: Batch, seed: int, guide: RtcGuide | None = None
    ) -> tuple[np.ndarray, str]:
        """Normalised actions [chunk, action_dim] of one preprocessed observation, and the RTC
        method that fitted them to `guide` ("" without one)."""
        generator = torch.Generator().manual_seed(seed)
        if self.loaded.meta.family == "cogact":
            return self._sample_cogact(batch, generator), ""
        return self._sample_pi0(batch, generator, guide)

    def _sample_pi0(
        self, batch: Batch, generator: torch.Generator, guide: RtcGuide | None
    ) -> tuple[np.ndarray, str]:
        config = self.loaded.config
        inputs = {k: v.numpy() for k, v in pi0_inputs(config, batch).items()}
        shape = (1, config.chunk_size, config.max_action_dim)
        noise = torch.randn(shape, generator=generator)
        self.prefix.infer({name: inputs[name] for name in PI0_PREFIX})
        for index, name in enumerate(self.cache_inputs):
            self.step.set_tensor(name, self.prefix.get_output_tensor(index))

        def velocity_at(x: torch.Tensor, t: float) -> torch.Tensor:
            feed = {
                "state": inputs["state"],
                "noise": x.numpy(),
                "timestep": np.full((1,), t, np.float32),
                "attention_mask": inputs["attention_mask"],
            }
            return torch.from_numpy(self.step.infer(feed)[0].copy())

        # No backward pass through a compiled graph: a "vjp" guide runs with J = I (reported).
        actions, method = euler_flow(velocity_at, noise, self.num_steps, guide)
        return actions[0, :, : pi0_action_dim(config)].numpy(), method

    def _sample_cogact(self, batch: Batch, generator: torch.Generator) -> np.ndarray:
        settings = self.settings
        inputs = cogact_inputs(batch)
        z = torch.from_numpy(self.prefix.infer({k: v.numpy() for k, v in inputs.items()})[0])
        x = torch.randn((1, settings["horizon"], settings["action_dim"]), generator=generator)

        def head(noisy: torch.Tensor, timestep: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
            feed = {"noisy": noisy.numpy(), "timestep": timestep.numpy(), "z": latent.numpy()}
            return torch.from_numpy(self.step.infer(feed)[0].copy())

        guidance = float(settings["guidance_scale"])
        actions = ddim_sample(head, z, x, self.alphas, self.num_steps, guidance)
        return actions[0].float().numpy()

    def predict(
        self,
        image: np.ndarray,
        instruction: str,
        state: np.ndarray,
        seed: int | None = None,
        prefix: ChunkPrefix | None = None,
    ) -> ActionChunk:
        """The next action chunk; the same inputs and seed always give the same chunk.

        With a `prefix` (pi0), the chunk is RTC-guided to continue it (policy/rtc.py).
        """
        started = time.perf_counter()
        batch = self.preprocess(image, instruction, state)
        meta = self.loaded.meta
        guide = None
        if prefix is not None and self.chunk_guidance:
            normalize = meta.normalizer.normalize_actions
            guide = rtc_guide(prefix.actions, prefix.delay, normalize, prefix.jacobian)
        prepared = time.perf_counter()
        actions, method = self.sample(batch, self.seed if seed is None else seed, guide)
        sampled = time.perf_counter()
        chunk = ActionChunk(
            meta.normalizer.unnormalize_actions(actions),
            meta.dt,
            meta.action_space,
            meta.action_names,
            method,
        )
        self.last_timing = stage_times(started, prepared, sampled, time.perf_counter())
        return chunk


def load_openvino_policy(
    directory: str | Path, threads: int | None = None, seed: int = 0
) -> OpenVinoPolicy:
    """The OpenVinoPolicy of a model directory that `daptq quantize --runtime openvino` wrote."""
    directory = Path(directory)
    if not has_openvino_artefact(directory):
        raise ModelError(
            f"{directory} has no {RUNTIME_DIR}/{RUNTIME_FILE}: export it with "
            "`daptq quantize --runtime openvino`, or run it with --runtime torch"
        )
    meta, config, tokenizer = read_model_files(directory)
    if meta.family == "pi0":
        from transformers.models.pi0.configuration_pi0 import PI0Config

        loaded = ExportedModel(meta, PI0Config.from_dict(config), tokenizer)
    else:
        loaded = ExportedModel(meta, None, tokenizer)
    return OpenVinoPolicy(loaded, directory / RUNTIME_DIR, threads, seed)
