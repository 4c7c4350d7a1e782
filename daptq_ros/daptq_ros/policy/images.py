"""Camera frames -> the model's input image: resizing and tiling views (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np


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
