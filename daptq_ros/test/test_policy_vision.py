"""The keypoint stem: it must localise a small object, and models saved before its learned
sharpness existed must still build."""

import pytest
import torch
from policy_data import tiny_model
from torch import nn

from daptq_ros.policy.families import get_family
from daptq_ros.policy.families.vision import KeypointStem

SIZE = 48


def dot_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy grey images in [-1, 1] with one 3x3 green dot; the dot centres in [-1, 1]."""
    images = 0.2 * torch.randn(count, 3, SIZE, SIZE, generator=generator)
    cells = torch.randint(2, SIZE - 2, (count, 2), generator=generator)
    green = torch.tensor([-1.0, 1.0, -1.0])[:, None, None]
    for image, (row, col) in zip(images, cells.tolist(), strict=True):
        image[:, row - 1 : row + 2, col - 1 : col + 2] = green
    centres = cells.flip(-1).float() / (SIZE - 1) * 2.0 - 1.0  # (x, y), as the stem's grid
    return images, centres


def probe_error(sharpness: float | None, steps: int = 150) -> float:
    """Train stem + linear readout to regress the dot's position; RMS error on fresh images."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    stem = KeypointStem([8, 16], num_tokens=4, hidden_size=8, sharpness=sharpness)
    readout = nn.Linear(4 * 8, 2)
    parameters = [*stem.parameters(), *readout.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    for _ in range(steps):
        images, centres = dot_images(32, generator)
        loss = (readout(stem(images).flatten(1)) - centres).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        images, centres = dot_images(256, generator)
        return (readout(stem(images).flatten(1)) - centres).pow(2).mean().sqrt().item()


def test_keypoint_stem_localises_a_small_dot():
    # The dot's centre is uniform in [-1, 1]^2 (RMS ~0.58 around the mean); the stem must
    # place it within a few pixels.
    torch.set_num_threads(1)
    assert probe_error(sharpness=10.0) < 0.15


def test_sharpness_is_a_learned_per_keypoint_scale():
    stem = KeypointStem([8, 16], num_tokens=4, hidden_size=8, sharpness=10.0)
    assert stem.log_sharpness is not None
    assert stem.log_sharpness.requires_grad and stem.log_sharpness.shape == (4,)
    assert torch.allclose(stem.log_sharpness.exp(), torch.full((4,), 10.0))
    assert KeypointStem([8, 16], num_tokens=4, hidden_size=8).log_sharpness is None


@pytest.mark.parametrize("family", ["pi0", "cogact"])
def test_models_saved_before_the_sharpness_existed_still_build(family):
    model, config = tiny_model(family)
    assert any("log_sharpness" in name for name in model.state_dict())
    if family == "pi0":
        del config["daptq_vision_stem"]["sharpness"]
    else:
        del config["stem_sharpness"]
    legacy = get_family(family).build(config)
    assert not any("log_sharpness" in name for name in legacy.state_dict())
