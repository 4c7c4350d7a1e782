"""Convert the messages drift analysis and episodes need to and from numpy arrays.

Readers take any object with the message's fields (rosbags classes, rclpy messages), so live
topics and bags share one decode path. Builders take the message classes by type name: a
mapping such as `BagWriter.types` / `Typestore.types`, or a function such as rclpy's
`rosidl_runtime_py.utilities.get_message`.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daptq_ros.errors import BagError

TypeSource = Mapping[str, Any] | Callable[[str], Any]

NS_PER_S = 1_000_000_000

# sensor_msgs/Image encodings we read: channels, bytes per channel, channel indices that give RGB.
IMAGE_ENCODINGS: dict[str, tuple[int, int, tuple[int, int, int]]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, (0, 0, 0)),
    "rgb16": (3, 2, (0, 1, 2)),
    "bgr16": (3, 2, (2, 1, 0)),
    "rgba16": (4, 2, (0, 1, 2)),
    "bgra16": (4, 2, (2, 1, 0)),
    "mono16": (1, 2, (0, 0, 0)),
}

# sensor_msgs/CompressedImage codecs we write (and read), with OpenCV's file extension.
COMPRESSED_FORMATS = {"jpeg": ".jpg", "png": ".png"}


class JointSample(NamedTuple):
    """One sensor_msgs/JointState as arrays; velocities are NaN when the message has none."""

    stamp: float
    names: tuple[str, ...]
    positions: NDArray[np.float64]
    velocities: NDArray[np.float64]


class PoseSample(NamedTuple):
    """One geometry_msgs/PoseStamped as arrays: position [3] and quaternion xyzw [4]."""

    stamp: float
    position: NDArray[np.float64]
    quat_xyzw: NDArray[np.float64]


def time_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def time_to_sec(stamp: Any) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return time_to_ns(stamp) / NS_PER_S


def sec_to_ns(seconds: float) -> int:
    """Float seconds -> integer nanoseconds (rounded to the nearest ns)."""
    return round(seconds * NS_PER_S)


def ns_to_time(types: TypeSource, ns: int) -> Any:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return message_class(types, "builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def sec_to_time(types: TypeSource, seconds: float) -> Any:
    """Float seconds -> builtin_interfaces/Time."""
    return ns_to_time(types, sec_to_ns(seconds))


def joint_state_to_numpy(msg: Any) -> JointSample:
    """sensor_msgs/JointState -> (stamp s, names, positions [J], velocities [J])."""
    names = tuple(msg.name)
    positions = np.asarray(msg.position, dtype=np.float64)
    velocities = np.asarray(msg.velocity, dtype=np.float64)
    if positions.shape != (len(names),):
        raise BagError(
            f"JointState has {len(names)} names but {positions.size} positions; "
            "the publisher must send one position per joint"
        )
    if velocities.size == 0:
        # ROS allows an empty velocity list; NaN keeps every sample the same shape.
        velocities = np.full(len(names), np.nan)
    elif velocities.shape != (len(names),):
        raise BagError(
            f"JointState has {len(names)} names but {velocities.size} velocities; "
            "the publisher must send none or one per joint"
        )
    return JointSample(time_to_sec(msg.header.stamp), names, positions, velocities)


def pose_stamped_to_numpy(msg: Any) -> PoseSample:
    """geometry_msgs/PoseStamped -> (stamp s, position [3], quaternion xyzw [4])."""
    p, o = msg.pose.position, msg.pose.orientation
    return PoseSample(
        time_to_sec(msg.header.stamp),
        np.array([p.x, p.y, p.z], dtype=np.float64),
        np.array([o.x, o.y, o.z, o.w], dtype=np.float64),
    )


def header(types: TypeSource, stamp_ns: int, frame_id: str = "") -> Any:
    """A std_msgs/Header with the given stamp and frame."""
    return message_class(types, "std_msgs/msg/Header")(
        stamp=ns_to_time(types, stamp_ns), frame_id=frame_id
    )


def joint_state_msg(
    types: TypeSource,
    stamp_ns: int,
    names: Sequence[str],
    positions: ArrayLike,
    velocities: ArrayLike | None = None,
    efforts: ArrayLike | None = None,
    frame_id: str = "",
) -> Any:
    """Build a sensor_msgs/JointState; omitted velocities/efforts are sent empty, as ROS allows."""
    cls = message_class(types, "sensor_msgs/msg/JointState")
    columns = {"position": positions, "velocity": velocities, "effort": efforts}
    fields = {}
    for field, values in columns.items():
        column = np.asarray([] if values is None else values, dtype=np.float64).reshape(-1)
        if values is not None and column.size != len(names):
            raise BagError(
                f"JointState {field}: {column.size} values for {len(names)} joints; "
                "give one per joint"
            )
        fields[field] = float_sequence(cls, column)
    return cls(header=header(types, stamp_ns, frame_id), name=list(names), **fields)


def pose_stamped_msg(
    types: TypeSource,
    stamp_ns: int,
    position: ArrayLike,
    quat_xyzw: ArrayLike,
    frame_id: str = "",
) -> Any:
    """Build a geometry_msgs/PoseStamped from position [3] and quaternion xyzw [4]."""
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or q.shape != (4,):
        raise BagError(
            f"PoseStamped needs a position of 3 and a quaternion of 4 values, got {p.size} and "
            f"{q.size}; pass xyz and xyzw"
        )
    point = message_class(types, "geometry_msgs/msg/Point")(
        x=float(p[0]), y=float(p[1]), z=float(p[2])
    )
    orientation = message_class(types, "geometry_msgs/msg/Quaternion")(
        x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
    )
    pose = message_class(types, "geometry_msgs/msg/Pose")(position=point, orientation=orientation)
    return message_class(types, "geometry_msgs/msg/PoseStamped")(
        header=header(types, stamp_ns, frame_id), pose=pose
    )


def image_msg(types: TypeSource, stamp_ns: int, rgb: ArrayLike, frame_id: str = "") -> Any:
    """Build a sensor_msgs/Image, encoding rgb8 with packed rows, from an [H, W, 3] uint8 array."""
    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise BagError(
            f"an rgb8 image needs an [H, W, 3] uint8 array, got {pixels.dtype} {pixels.shape}; "
            "convert it with np.asarray(image, dtype=np.uint8)"
        )
    height, width, _ = pixels.shape
    cls = message_class(types, "sensor_msgs/msg/Image")
    data = np.ascontiguousarray(pixels).reshape(-1)
    return cls(
        header=header(types, stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=array.array("B", data.tobytes()) if is_rclpy_class(cls) else data,
    )


def image_to_numpy(msg: Any) -> NDArray[np.uint8]:
    """sensor_msgs/Image -> [H, W, 3] uint8 RGB, honouring step (row padding) and byte order.

    Reads the encodings of IMAGE_ENCODINGS: alpha is dropped, mono is repeated into three
    channels and 16-bit channels keep their high byte.
    """
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise BagError(
            f"image encoding {encoding!r} is not supported; publish one of "
            f"{', '.join(IMAGE_ENCODINGS)}"
        )
    channels, depth, rgb = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    data = _bytes(msg.data)
    if step < row_bytes or data.size != height * step:
        raise BagError(
            f"{encoding} image of {height}x{width} has step {step} and {data.size} data bytes; "
            f"a row needs step >= {row_bytes} and the data height * step bytes"
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        order = ">u2" if msg.is_bigendian else "<u2"
        rows = (np.ascontiguousarray(rows).view(order) >> 8).astype(np.uint8)
    return np.ascontiguousarray(rows.reshape(height, width, channels)[:, :, list(rgb)])


def compressed_image_msg(
    types: TypeSource,
    stamp_ns: int,
    rgb: ArrayLike,
    format: str = "jpeg",
    frame_id: str = "",
) -> Any:
    """Build a sensor_msgs/CompressedImage (jpeg or png) from an [H, W, 3] uint8 RGB array."""
    import cv2  # only compressed images need OpenCV; bags/ stays light without them

    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise BagError(
            f"a compressed image needs an [H, W, 3] uint8 array, got {pixels.dtype} "
            f"{pixels.shape}; convert it with np.asarray(image, dtype=np.uint8)"
        )
    if format not in COMPRESSED_FORMATS:
        raise BagError(
            f"compressed image format {format!r} is not supported; use one of "
            f"{', '.join(COMPRESSED_FORMATS)}"
        )
    # OpenCV encodes BGR; the format string is the one image_transport's "compressed" plugin
    # writes, so ROS subscribers restore rgb8.
    ok, encoded = cv2.imencode(COMPRESSED_FORMATS[format], np.ascontiguousarray(pixels[:, :, ::-1]))
    if not ok:
        raise BagError(f"OpenCV could not encode a {pixels.shape} image as {format}")
    cls = message_class(types, "sensor_msgs/msg/CompressedImage")
    data = encoded.reshape(-1)
    return cls(
        header=header(types, stamp_ns, frame_id),
        format=f"rgb8; {format} compressed bgr8",
        data=array.array("B", data.tobytes()) if is_rclpy_class(cls) else data,
    )


def compressed_image_to_numpy(msg: Any) -> NDArray[np.uint8]:
    """sensor_msgs/CompressedImage (jpeg or png) -> [H, W, 3] uint8 RGB.

    The format is "jpeg" / "png" or image_transport's "rgb8; jpeg compressed bgr8". Alpha is
    dropped, grey is repeated into three channels and 16-bit channels keep their high byte.
    """
    import cv2  # only compressed images need OpenCV; bags/ stays light without them

    fmt = str(msg.format)
    # image_transport writes "<raw encoding>; <codec> compressed <encoding>"; older publishers
    # just the codec. The raw encoding does not matter: OpenCV decodes colour as BGR.
    words = fmt.split(";")[-1].split()
    codec = words[0].lower() if words else ""
    if codec not in COMPRESSED_FORMATS:
        raise BagError(
            f"compressed image format {fmt!r} is not supported; publish jpeg or png "
            "(image_transport's compressed transport; compressedDepth is depth, not colour) "
            "or record the raw sensor_msgs/Image topic"
        )
    data = _bytes(msg.data)
    # imdecode returns None for bytes that do not decode, and raises on an empty buffer.
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None:
        raise BagError(
            f"compressed image (format {fmt!r}) of {data.size} bytes does not decode as "
            f"{codec}; the message is empty or corrupt: check the publisher or record the raw "
            "sensor_msgs/Image topic"
        )
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped


def _bytes(data: Any) -> NDArray[np.uint8]:
    """A uint8[] field as a flat uint8 array: numpy (rosbags), array.array or bytes (rclpy)."""
    if isinstance(data, bytes | bytearray | memoryview | array.array):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def is_rclpy_class(cls: Any) -> bool:
    """Whether `cls` is a rosidl-generated (rclpy) message class rather than a rosbags one."""
    return hasattr(cls, "get_fields_and_field_types")


def message_class(types: TypeSource, name: str) -> Any:
    """The message class called `name` from a mapping or a lookup function."""
    try:
        return types[name] if isinstance(types, Mapping) else types(name)
    except (KeyError, AttributeError, ModuleNotFoundError, ValueError) as error:
        raise BagError(
            f"message type {name} is not available ({error}); pass the typestore's types "
            "or an rclpy type lookup"
        ) from None


def float_sequence(cls: Any, values: NDArray[np.float64]) -> Any:
    """A float64[] field value in the form this message class accepts."""
    # rosidl-generated (rclpy) classes validate a float64[] as array.array or a Python sequence,
    # never an ndarray; rosbags serializes ndarrays.
    if is_rclpy_class(cls):
        return array.array("d", values.tolist())
    return values
