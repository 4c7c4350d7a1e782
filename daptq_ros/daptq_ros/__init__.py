"""daptq_ros: drift-aware post-training quantization of VLA policies for ROS 2 robot arms."""

__version__ = "0.1.0"
