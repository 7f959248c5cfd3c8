"""Imports every command module so each registers itself on the app."""

from mineru_fit.cli import devices_cmd, models_cmd, plan_cmd, doctor_cmd, serve_cmd, monitor_cmd, parse_cmd, service_cmd, compare_cmd  # noqa: F401
