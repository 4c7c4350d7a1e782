"""sensor_msgs/Image and CompressedImage <-> numpy: builders, every encoding, jpeg and png."""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daptq_ros.bags import BagReader, BagWriter, make_typestore
from daptq_ros.bags.convert import (
    IMAGE_ENCODINGS,
    compressed_image_msg,
    compressed_image_to_numpy,
    header,
    image_msg,
    image_to_numpy,
)
from daptq_ros.errors import BagError

TYPES = make_typestore().types
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@dataclass
class Image:
    """An rclpy-like sensor_msgs/Image: data as bytes, as rclpy may hand it over."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any = field(repr=False)


def encode(rgb: np.ndarray, encoding: str, padding: int, bigendian: bool = False) -> Image:
    """Pack `rgb` in `encoding` with `padding` junk bytes at the end of every row."""
    channels, depth, _ = IMAGE_ENCODINGS[encoding]
    # 16 bit: the high byte is the value, the low byte differs, so byte order matters.
    pixels = rgb.astype(np.uint16) * 256 + 0x11 if depth == 2 else rgb
    if encoding.startswith("bgr"):
        pixels = pixels[:, :, ::-1]
    if channels == 4:
        alpha = np.full((*rgb.shape[:2], 1), 7, dtype=pixels.dtype)
        pixels = np.concatenate([pixels, alpha], axis=2)
    if channels == 1:
        pixels = pixels[:, :, :1]
    if depth == 2:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(rgb.shape[0], -1)
    junk = np.full((rgb.shape[0], padding), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return Image(
        rgb.shape[0], rgb.shape[1], encoding, int(bigendian), data.shape[1], data.tobytes()
    )


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
@pytest.mark.parametrize("padding", [0, 5])
def test_every_encoding_reads_as_rgb(encoding: str, padding: int) -> None:
    expected = np.repeat(RGB[:, :, :1], 3, axis=2) if encoding.startswith("mono") else RGB
    np.testing.assert_array_equal(image_to_numpy(encode(RGB, encoding, padding)), expected)


@pytest.mark.parametrize("encoding", ["rgb16", "mono16"])
def test_sixteen_bit_honours_byte_order(encoding: str) -> None:
    big, little = encode(RGB, encoding, 3, bigendian=True), encode(RGB, encoding, 3)
    assert big.data != little.data
    np.testing.assert_array_equal(image_to_numpy(big), image_to_numpy(little))


def test_rgb8_builder_round_trips_through_a_bag(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic("/image", "sensor_msgs/msg/Image")
        writer.write("/image", image_msg(writer.types, 5, RGB, "camera"), 5)
    with BagReader(tmp_path / "bag") as reader:
        (message,) = reader.messages(["/image"])
    msg = message.msg
    assert (msg.encoding, msg.step, msg.is_bigendian, msg.header.frame_id) == (
        "rgb8",
        21,
        0,
        "camera",
    )
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)


def test_builder_gives_rclpy_classes_a_byte_array() -> None:
    class RclpyImage:
        """Stands in for a rosidl-generated class: it has get_fields_and_field_types."""

        def __init__(self, **fields: Any) -> None:
            self.__dict__.update(fields)

        @staticmethod
        def get_fields_and_field_types() -> dict[str, str]:
            return {}

    def lookup(name: str) -> Any:
        return RclpyImage if name == "sensor_msgs/msg/Image" else TYPES[name]

    msg = image_msg(lookup, 0, RGB)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)


def test_builder_refuses_a_non_rgb8_array() -> None:
    with pytest.raises(BagError, match=r"\[H, W, 3\] uint8"):
        image_msg(TYPES, 0, RGB.astype(np.float32))


def test_unknown_encoding_is_named() -> None:
    image = encode(RGB, "rgb8", 0)
    image.encoding = "yuv422"
    with pytest.raises(BagError, match="'yuv422' is not supported"):
        image_to_numpy(image)


@pytest.mark.parametrize("change", ["short_step", "short_data"])
def test_inconsistent_step_or_data_is_refused(change: str) -> None:
    image = encode(RGB, "rgb8", 2)
    if change == "short_step":
        image.step = 20
    else:
        image.data = image.data[:-1]
    with pytest.raises(BagError, match="step"):
        image_to_numpy(image)


# sensor_msgs/CompressedImage: the jpeg/png builder and reading what image_transport publishes.


def compressed(data: Any, format: str) -> Any:
    """A rosbags sensor_msgs/CompressedImage with `data` bytes, as a bag would hold it."""
    return TYPES["sensor_msgs/msg/CompressedImage"](
        header=header(TYPES, 0), format=format, data=np.frombuffer(bytes(data), dtype=np.uint8)
    )


def png(pixels: np.ndarray) -> bytes:
    """`pixels` as a png file, in OpenCV's channel order (BGR, grey or 16 bit)."""
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("format", ["png", "rgb8; png compressed bgr8", "bgr8; PNG compressed"])
def test_compressed_colour_reads_as_rgb(format: str) -> None:
    image = compressed(png(RGB[:, :, ::-1]), format)
    np.testing.assert_array_equal(compressed_image_to_numpy(image), RGB)


def test_compressed_grey_repeats_into_three_channels() -> None:
    grey = RGB[:, :, 0]
    image = compressed(png(grey), "mono8; png compressed ")
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(compressed_image_to_numpy(image), expected)


def test_compressed_sixteen_bit_keeps_the_high_byte() -> None:
    deep = RGB.astype(np.uint16) * 256 + 0x11
    image = compressed(png(np.ascontiguousarray(deep[:, :, ::-1])), "bgr16; png compressed bgr16")
    np.testing.assert_array_equal(compressed_image_to_numpy(image), RGB)


def test_compressed_alpha_is_dropped() -> None:
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((*RGB.shape[:2], 1), 7, np.uint8)], axis=2)
    image = compressed(png(np.ascontiguousarray(bgra)), "png")
    np.testing.assert_array_equal(compressed_image_to_numpy(image), RGB)


@pytest.mark.parametrize("format", ["png", "jpeg"])
def test_compressed_builder_round_trips_through_a_bag(tmp_path: Path, format: str) -> None:
    # A smooth image, so that lossy jpeg stays within a few grey levels.
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([x * 5, y * 7, x + y * 2], axis=2).astype(np.uint8)
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic("/image/compressed", "sensor_msgs/msg/CompressedImage")
        message = compressed_image_msg(writer.types, 5, smooth, format, "camera")
        writer.write("/image/compressed", message, 5)
    with BagReader(tmp_path / "bag") as reader:
        (record,) = reader.messages(["/image/compressed"])
    msg = record.msg
    assert (msg.format, msg.header.frame_id) == (f"rgb8; {format} compressed bgr8", "camera")
    decoded = compressed_image_to_numpy(msg).astype(int)
    tolerance = 0 if format == "png" else 8
    assert np.abs(decoded - smooth).max() <= tolerance


def test_compressed_builder_gives_rclpy_classes_a_byte_array() -> None:
    class RclpyCompressedImage:
        """Stands in for a rosidl-generated class: it has get_fields_and_field_types."""

        def __init__(self, **fields: Any) -> None:
            self.__dict__.update(fields)

        @staticmethod
        def get_fields_and_field_types() -> dict[str, str]:
            return {}

    def lookup(name: str) -> Any:
        return RclpyCompressedImage if name == "sensor_msgs/msg/CompressedImage" else TYPES[name]

    msg = compressed_image_msg(lookup, 0, RGB, "png")
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(compressed_image_to_numpy(msg), RGB)


def test_compressed_builder_refuses_an_unknown_format_or_array() -> None:
    with pytest.raises(BagError, match="'webp' is not supported; use one of jpeg, png"):
        compressed_image_msg(TYPES, 0, RGB, "webp")
    with pytest.raises(BagError, match=r"\[H, W, 3\] uint8"):
        compressed_image_msg(TYPES, 0, RGB[:, :, 0])


@pytest.mark.parametrize("format", ["tiff", "16UC1; compressedDepth png", ""])
def test_unknown_compressed_format_is_named(format: str) -> None:
    with pytest.raises(BagError, match=f"format {format!r} is not supported; publish jpeg or png"):
        compressed_image_to_numpy(compressed(png(RGB), format))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8 not really a jpeg"], ids=["empty", "corrupt"])
def test_empty_or_corrupt_compressed_payload_is_refused(data: bytes) -> None:
    with pytest.raises(BagError, match=r"does not decode as jpeg; the message is empty or corrupt"):
        compressed_image_to_numpy(compressed(data, "jpeg"))
