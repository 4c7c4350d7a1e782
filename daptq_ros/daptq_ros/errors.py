"""The one exception family every user-facing error of daptq_ros belongs to."""


class DaptqError(Exception):
    """An error a user can fix: the message names the input, the problem and the fix."""


class ConfigError(DaptqError):
    """A bit configuration (or another config file) that does not validate."""


class BagError(DaptqError):
    """A rosbag2 that cannot be read, is incomplete, or lacks what the caller needs."""


class ModelError(DaptqError):
    """A model directory or checkpoint that is missing, incomplete or of the wrong kind."""


class DriftError(DaptqError):
    """Trajectories or monitor input that cannot be compared (bad stamps, shapes or names)."""


class PolicyError(DaptqError):
    """Images, states, actions or demonstrations that break the Policy contract."""


class SimError(DaptqError):
    """A simulator task, seed, action or setting that cannot be used, or a broken renderer."""


class ControlError(DaptqError):
    """Robot-side settings or inputs the control loop cannot use (limits, rates, parameters)."""
