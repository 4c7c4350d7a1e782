"""The ROS nodes' logic without rclpy: messages in, core calls, messages out."""
