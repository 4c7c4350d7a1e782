"""rclpy adapters: the only modules that import rclpy; each forwards messages to a robot/ core."""
