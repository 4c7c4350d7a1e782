"""An imported pi0 sees each camera exactly as its checkpoint's own processor prepares it.

A tiny pi0 of a geometry unlike the embedded models' (2 layers, widths 48/24, 64 px views,
chunk 20, 7-D state and action) is saved with transformers' own classes, imported with
`daptq import`, and must predict what the checkpoint's own pipeline predicts in FP32:
PI0Processor on the same raw frames -> sample_actions with the same noise -> the processor's
statistics undone. Both resizings of pi0 checkpoints are covered: SigLIP's stretch and
PI0ImageProcessor's fit-and-pad (its settings on SigLIP's class, which runs without torchvision).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from pi0_checkpoint import checkpoint_actions, save_tiny_pi0

from daptq_ros.cli import main
from daptq_ros.errors import ModelError, PolicyError
from daptq_ros.policy.images import ImageResize, model_image, resize_image
from daptq_ros.policy.importer import image_resize_from_processor
from daptq_ros.policy.inference import load_policy
from daptq_ros.policy.lerobot import LEROBOT_RESIZE
from daptq_ros.policy.model_meta import ModelMeta

pytestmark = [pytest.mark.slow]
VIEW_PX, CHUNK, DIMS = 64, 20, 7
TOLERANCE = 1e-5
INSTRUCTION = "pick the puck and place it"


@pytest.fixture(scope="module", params=["stretch", "letterbox"])
def checkpoint(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param) / "pi0"
    return save_tiny_pi0(folder, chunk_size=CHUNK, layers=2, widths=(48, 24), view=VIEW_PX,
                         dims=DIMS, letterbox=request.param == "letterbox")  # fmt: skip


def import_with_views(checkpoint: Path, num_views: int, out: Path) -> Path:
    """`daptq import` of the checkpoint for a 7-joint arm with `num_views` cameras."""
    joints = [f"joint{i}" for i in range(1, DIMS + 1)]
    mapping = {"name": "arm7", "num_views": num_views, "state_source": "joint_positions",
               "state_names": joints, "action_space": "joint_position",
               "action_names": [*joints[:-1], "gripper"], "dt": 0.05,
               "instruction_length": 48}  # fmt: skip
    robot = out.parent / f"arm7_{num_views}.yaml"
    robot.write_text(yaml.safe_dump(mapping))
    args = ["import", "--checkpoint", str(checkpoint), "--robot", str(robot), "--out", str(out)]
    assert main(args) == 0
    return out


def frames(shape: tuple[int, int], count: int, seed: int) -> list[np.ndarray]:
    """`count` random uint8 camera frames of (height, width) = shape."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize(
    ("shape", "num_views"), [((480, 640), 1), ((240, 240), 1), ((480, 640), 2)]
)
def test_predict_is_the_checkpoints_own_pipeline(checkpoint, tmp_path, shape, num_views):
    model = import_with_views(checkpoint, num_views, tmp_path / "model")
    views = frames(shape, num_views, seed=shape[1] + num_views)
    state = np.linspace(-0.3, 0.5, DIMS)
    policy = load_policy(model)
    ours = policy.predict(np.concatenate(views, axis=1), INSTRUCTION, state).actions
    theirs = checkpoint_actions(checkpoint, views, INSTRUCTION, state)
    assert ours.shape == theirs.shape == (CHUNK, DIMS)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)
    # The test can tell: the OpenCV stretch of our own models gives other actions.
    policy.loaded.meta = replace(policy.loaded.meta, image_resize=ImageResize())
    before = policy.predict(np.concatenate(views, axis=1), INSTRUCTION, state).actions
    assert np.abs(before - theirs).max() > 10 * TOLERANCE


def test_the_import_records_the_processors_resizing(checkpoint, tmp_path):
    model = import_with_views(checkpoint, 1, tmp_path / "model")
    recorded = json.loads((model / "daptq.json").read_text())["image_resize"]
    processor = json.loads((checkpoint / "processor_config.json").read_text())
    if "max_height" in processor["image_processor"]["size"]:  # PI0ImageProcessor's settings
        assert recorded["mode"] == "letterbox" and recorded["pad"] == "end"
        assert recorded["pad_value"] == 0.5  # 0 after normalising with mean = std = 0.5
    else:
        assert recorded["mode"] == "stretch"
    assert recorded["filter"] in ("pil_bicubic", "torch_bicubic")


def write_processor(folder: Path, image_processor: dict) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": image_processor}))
    return folder


def test_pi0_image_processor_defaults_are_a_bottom_right_letterbox(tmp_path):
    """PI0ImageProcessor (torchvision only) saved with its class defaults: 224 px, padded."""
    folder = write_processor(tmp_path, {"image_processor_type": "PI0ImageProcessor"})
    resize = image_resize_from_processor(folder, 224)
    assert resize == ImageResize("letterbox", "torch_bicubic", pad_value=0.5, pad="end")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"image_mean": [0.485, 0.456, 0.406]}, "image_mean"),
        ({"resample": 2}, "resample is 2"),
        ({"size": {"height": 96, "width": 96}}, "224 x 224"),
        ({"do_pad": False}, "do_pad False"),
        ({"image_processor_type": "CLIPImageProcessor"}, "CLIPImageProcessor"),
    ],
)
def test_a_processor_pi0_cannot_follow_is_refused_by_name(tmp_path, change, words):
    folder = write_processor(tmp_path, {"image_processor_type": "PI0ImageProcessor", **change})
    with pytest.raises(ModelError, match=words):
        image_resize_from_processor(folder, 224)


def test_lerobot_letterbox_centres_the_view_and_pads_black():
    """openpi's resize_with_pad_torch: int(h / ratio) rows, the odd padding row below."""
    import torch
    import torch.nn.functional as F

    frame = frames((480, 640), 1, seed=3)[0]
    out = model_image(frame, (63, 63), 1, LEROBOT_RESIZE)
    # ratio = max(640 / 63, 480 / 63): 63 x 47 fitted, 16 rows of padding: 8 above, 8 below.
    pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    fitted = F.interpolate(pixels, size=(47, 63), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(out[8:55], fitted.clamp(0, 1)[0].permute(1, 2, 0).numpy())
    assert (out[:8] == 0.0).all() and (out[55:] == 0.0).all()


def test_our_models_keep_the_opencv_stretch_of_the_tiled_frame():
    frame = frames((96, 200), 1, seed=4)[0]
    expected = resize_image(frame, (48, 96)).astype(np.float32) / 255.0
    np.testing.assert_array_equal(model_image(frame, (48, 96), 2, ImageResize()), expected)
    state = {"mode": "mean_std", "mean": [0.0] * 4, "std": [1.0] * 4}
    action = {"mode": "mean_std", "mean": [0.0], "std": [1.0]}
    old = {"format_version": 1, "family": "pi0", "action_space": "ee_delta",
           "action_names": ["dx"], "horizon": 2, "dt": 0.1, "image_size": [48, 96],
           "num_views": 2, "normalization": {"state": state, "action": action}}  # fmt: skip
    assert ModelMeta.from_dict(old).image_resize == ImageResize()  # before image_resize


def test_views_of_unequal_width_are_refused():
    resize = ImageResize("stretch", "pil_bicubic")
    with pytest.raises(PolicyError, match="2 camera views of equal width"):
        model_image(np.zeros((48, 97, 3), np.uint8), (64, 128), 2, resize)


@pytest.mark.parametrize(
    ("data", "words"),
    [({"mode": "crop"}, "mode 'crop'"), ({"pad_value": "grey"}, "pad_value"),
     ({"fill": 0}, "unknown key 'fill'")],
)  # fmt: skip
def test_a_bad_image_resize_in_daptq_json_names_the_key(data, words):
    with pytest.raises(ModelError, match=words):
        ImageResize.from_dict(data)
