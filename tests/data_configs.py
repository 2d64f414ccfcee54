"""Data configs for tests: configs/default.py's `data` sub-dict with overrides."""

from configs import default


def data_config(name: str = "digits", **overrides):
  cfg = default.get_config().data
  cfg.name = name
  for key, value in overrides.items():
    cfg[key] = value
  return cfg
