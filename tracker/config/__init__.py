"""Run configuration: options dataclasses, TOML presets, single-field overrides."""
