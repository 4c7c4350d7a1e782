"""Drift of executed robot trajectories against a reference: metrics, monitor, kinematics."""
