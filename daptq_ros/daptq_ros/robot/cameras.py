"""The policy node's cameras: the newest frame of each, and which frames were last used."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from daptq_ros.bags.convert import time_to_sec
from daptq_ros.errors import ControlError
from daptq_ros.policy.images import tile_views


class CameraFrames:
    """The newest RGB frame per camera (image_topics order) and its stamp (s)."""

    def __init__(self, topics: tuple[str, ...]) -> None:
        self.topics = topics
        # Watchdog stream names: "image", or "image <topic>" for each of several cameras.
        self.streams = ("image",) if len(topics) == 1 else tuple(f"image {t}" for t in topics)
        self._frames: dict[int, tuple[NDArray[np.uint8], float]] = {}
        self._used: tuple[float, ...] = ()  # stamps of the frames the last inference saw

    def store(self, rgb: NDArray[np.uint8], msg: Any, now: float, camera: int) -> str:
        """Keep `rgb` as camera `camera`'s newest frame; the watchdog stream it feeds."""
        if not 0 <= camera < len(self.topics):
            raise ControlError(f"camera {camera} is not one of the {len(self.topics)} image_topics")
        stamp = time_to_sec(msg.header.stamp)
        # Some drivers leave the stamp at zero: the arrival time stands in.
        self._frames[camera] = (rgb, stamp if stamp > 0 else now)
        return self.streams[camera]

    def fresh(self) -> tuple[NDArray[np.uint8], float] | None:
        """Every camera's newest frame tiled, and the oldest stamp among them; None until each
        camera has a frame, or when none is newer than the last inference saw (see `used`)."""
        if len(self._frames) < len(self.topics):
            return None
        frames = [self._frames[camera] for camera in range(len(self.topics))]
        stamps = tuple(stamp for _, stamp in frames)
        if stamps == self._used:
            return None
        return tile_views([rgb for rgb, _ in frames]), min(stamps)

    def use(self) -> None:
        """Mark the newest frames as seen by an inference."""
        self._used = tuple(self._frames[camera][1] for camera in range(len(self.topics)))

    def forget_use(self) -> None:
        """Let the newest frames be used again (a swapped model has not seen them)."""
        self._used = ()
