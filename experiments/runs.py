"""The run directories of a sweep's workdir: what each holds (scan) and whether it is a row's (differences).

Shared by the sweep, which decides what to train, and the report, which tabulates what is finished; neither
imports the other for it.
"""

from __future__ import annotations

import json
import os

from experiments import checkpoints

# What a run directory's replicas are, not how they are computed: a replica matches a row whatever run
# (seed range, noise settings) it was trained in.
REPLICA_KEYS = ("seed", "num_seeds", "noise_settings")


def noise_label(noise: dict) -> str:
  return f"{noise['kind']}:{float(noise['rate']):g}"


def scan(workdir: str | None) -> list[dict]:
  """Every run directory under WORKDIR/runs (moved-aside ones, `*.old-*`, excluded): {id, dir, stored
  config, status (None while unfinished), replicas [(setting label, seed)], summary}."""
  root = os.path.join(workdir, "runs") if workdir else None
  if not root or not os.path.isdir(root):
    return []
  out = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if ".old-" in name or not os.path.exists(os.path.join(path, "config.json")):
      continue
    with open(os.path.join(path, "config.json")) as f:
      stored = json.load(f)
    summary = None
    if os.path.exists(os.path.join(path, "summary.json")):
      with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    settings = stored.get("noise_settings") or [stored["noise"]]
    out.append(
      {
        "id": name,
        "dir": path,
        "stored": stored,
        "status": summary.get("status") if summary else None,
        "summary": summary,
        "noises": [{"kind": n["kind"], "rate": float(n["rate"])} for n in settings],
        "replicas": [(noise_label(n), stored["seed"] + i) for n in settings for i in range(stored["num_seeds"])],
      }
    )
  return out


def differences(stored: dict, config) -> list[str]:
  """The config keys (replica keys aside) where a run directory's config differs from a row's."""
  return checkpoints.config_differences(stored, config, ignore=REPLICA_KEYS)
