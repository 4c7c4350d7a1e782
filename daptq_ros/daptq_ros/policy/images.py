"""Camera frames -> the model's input image: resizing and tiling views.

A model says how its views are brought to its input size (`ImageResize`, daptq.json
"image_resize"). Our own models stretch the tiled frame with OpenCV; an imported checkpoint
resizes each camera view as its own processor does (policy/importer.py, policy/lerobot.py):

- "stretch": the view is resized to the model's view size, aspect ratio not kept;
- "letterbox": the view is scaled to fit, aspect ratio kept, and padded with `pad_value`:
  pad "end" puts all padding after the image (bottom, right) with the fitted size
  int(h * min(H / h, W / w)) (transformers' image processors); pad "centre" splits it evenly,
  the odd pixel after, with the fitted size int(h / max(h / H, w / W)) (openpi, LeRobot).

Filters: "opencv" (INTER_AREA shrinking, INTER_LINEAR growing, on uint8: ours), "pil_bicubic"
(Pillow's BICUBIC on uint8: transformers' PIL backend), "torch_bicubic" (torch's antialiased
bicubic on uint8: transformers' torchvision backend on the CPU) and "torch_bilinear" (torch's
bilinear on floats in [0, 1], no antialiasing, clamped to [0, 1]: openpi, LeRobot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from daptq_ros.errors import ModelError, PolicyError

RESIZE_MODES = ("stretch", "letterbox")
RESIZE_FILTERS = ("opencv", "pil_bicubic", "torch_bicubic", "torch_bilinear")
PAD_PLACES = ("end", "centre")


@dataclass(frozen=True)
class ImageResize:
    """How a view becomes the model's input (module docstring); pad_value in [0, 1] pixel units."""

    mode: str = "stretch"
    filter: str = "opencv"
    pad_value: float = 0.0
    pad: str = "end"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, RESIZE_MODES),
            ("filter", self.filter, RESIZE_FILTERS),
            ("pad", self.pad, PAD_PLACES),
        ):
            if value not in allowed:
                raise ModelError(
                    f"daptq.json image_resize: {name} {value!r} is not one of {', '.join(allowed)}"
                )
        value = self.pad_value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value)):
            raise ModelError(f"daptq.json image_resize: pad_value {value!r} is not a number")
        object.__setattr__(self, "pad_value", float(value))

    @property
    def per_view(self) -> bool:
        """Whether each view is resized on its own (all but our models' OpenCV stretch)."""
        return (self.mode, self.filter) != ("stretch", "opencv")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"mode": self.mode, "filter": self.filter, "pad_value": self.pad_value,
                "pad": self.pad}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> ImageResize:
        """Inverse of to_dict; missing keys take the defaults (ModelError on unknown ones)."""
        if not isinstance(data, dict):
            raise ModelError(f"daptq.json image_resize must be a JSON object, got {data!r}")
        if unknown := sorted(set(data) - {"mode", "filter", "pad_value", "pad"}):
            raise ModelError(f"daptq.json image_resize: unknown key {unknown[0]!r}; remove it")
        return cls(**data)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxWx3 uint8 image at (height, width) = size; INTER_AREA when shrinking (no aliasing)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def tile_views(views: list[np.ndarray]) -> np.ndarray:
    """Camera frames side by side, each scaled to the first one's height (aspect kept)."""
    height = views[0].shape[0]
    scaled = [
        resize_image(view, (height, round(view.shape[1] * height / view.shape[0])))
        for view in views
    ]
    return scaled[0] if len(scaled) == 1 else np.concatenate(scaled, axis=1)


def model_image(
    frame: np.ndarray, size: tuple[int, int], num_views: int, resize: ImageResize
) -> np.ndarray:
    """float32 [H, V*W, 3] in [0, 1]: the uint8 frame's V side-by-side views at (H, W) each.

    Our models' default stretches the tiled frame as one image; every other `resize` splits the
    frame into V views of equal width (cameras of one size, as tile_views gives them) and
    resizes each on its own, as the checkpoint's processor does with each camera.
    """
    if not resize.per_view:
        return resize_image(frame, size).astype(np.float32) / np.float32(255.0)
    if frame.shape[1] % num_views:
        raise PolicyError(
            f"image width {frame.shape[1]} does not split into {num_views} camera views of "
            "equal width; publish cameras of one size, tiled side by side"
        )
    height, width = size[0], size[1] // num_views
    views = np.split(frame, num_views, axis=1)
    return np.concatenate([_view(v, (height, width), resize) for v in views], axis=1)


def _view(view: np.ndarray, size: tuple[int, int], resize: ImageResize) -> np.ndarray:
    """One uint8 view -> float32 (height, width) = size in [0, 1], as `resize` says."""
    if resize.mode == "stretch":
        return _resized(view, size, resize.filter)
    (h, w), (height, width) = view.shape[:2], size
    if resize.pad == "end":
        scale = min(height / h, width / w)
        fitted = (int(h * scale), int(w * scale))
        top = left = 0
    else:
        ratio = max(h / height, w / width)
        fitted = (int(h / ratio), int(w / ratio))
        top, left = (height - fitted[0]) // 2, (width - fitted[1]) // 2
    out = np.full((height, width, 3), resize.pad_value, np.float32)
    out[top : top + fitted[0], left : left + fitted[1]] = _resized(view, fitted, resize.filter)
    return out


def _resized(view: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    """A uint8 view resized to (height, width) = size with filter `kind`, float32 in [0, 1]."""
    if view.shape[:2] == tuple(size):  # every filter leaves the size it is asked for alone
        return view.astype(np.float32) / np.float32(255.0)
    height, width = size
    if kind == "opencv":
        resized = resize_image(view, size)
    elif kind == "pil_bicubic":
        from PIL import Image

        resized = np.asarray(Image.fromarray(view).resize((width, height), Image.BICUBIC))
    else:
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(np.ascontiguousarray(view)).permute(2, 0, 1).contiguous()[None]
        if kind == "torch_bilinear":  # on floats, as openpi's resize_with_pad_torch
            floats = pixels.float() / 255.0
            out = F.interpolate(floats, size=size, mode="bilinear", align_corners=False)
            return out.clamp(0.0, 1.0)[0].permute(1, 2, 0).numpy()
        out = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        resized = out[0].permute(1, 2, 0).numpy()
    return resized.astype(np.float32) / np.float32(255.0)
