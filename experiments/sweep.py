"""Runs a grid of losses × noise settings × seeds and writes tables and plots that compare them.

  python -m experiments.sweep --config=configs/sweeps/digits.py --workdir=runs/sweep [--config.key=value ...]

A cell of the table is one loss at one noise setting, over `num_seeds` seeds. All seeds of a cell, and with
`group_noise` all noise settings of a loss, train together as vmapped replicas of one compiled program, in
one workdir DIR/runs/<run>/, so a run resumes like any training run and one with a finished summary.json
is never run again.
DIR gets results.csv, results.md and plots/*.png (experiments/report.py) after every cell.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time

import ml_collections

from experiments import checkpoints, report, runtime, train
from experiments import settings as run_settings


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")


def noise_label(noise: dict) -> str:
  return f"{noise['kind']}:{noise['rate']:g}"


def _selected(items, only: str, key):
  if not only:
    return list(items)
  wanted = [w.strip() for w in only.split(",") if w.strip()]
  chosen = [it for it in items if key(it) in wanted]
  missing = sorted(set(wanted) - {key(it) for it in chosen})
  if missing:
    raise ValueError(f"{missing} not in the grid; valid choices: {[key(it) for it in items]}")
  return chosen


def expand(sweep: ml_collections.ConfigDict) -> list[dict]:
  """The grid as runs {id, loss, noises, config}, in table order (loss-major).

  A run trains one loss at one or more noise settings: with `group_noise`, all noise settings of a loss
  are replicas of one program (the correction losses excepted: their loss depends on the noise). Each run's
  config is the base config with the loss entry and its overrides applied. Everything is validated here,
  before anything is trained or compiled.
  """
  commas = [l["label"] for l in sweep.losses if "," in l["label"]]
  if commas:  # only_losses is a comma-separated list of labels
    raise ValueError(f"loss labels must not contain ',': {commas}")
  losses = _selected(sweep.losses, sweep.only_losses, lambda l: l["label"])
  noises = _selected(sweep.noise, sweep.only_noise, noise_label)
  labels = [l["label"] for l in losses]
  if len(set(labels)) != len(labels):
    raise ValueError(f"loss labels must be unique; got {labels}")
  runs = []
  for loss in losses:
    config = copy.deepcopy(sweep.base)
    config.seed = sweep.seed
    config.num_seeds = sweep.num_seeds
    config.loss.name = loss["name"]
    for hp in config.loss:  # a row's loss is exactly its entry, whatever loss the base config had
      if hp != "name":
        config.loss[hp] = None
    for hp, value in loss.get("hparams", {}).items():
      if hp not in config.loss:
        raise ValueError(f"loss {loss['label']!r}: unknown hyperparameter {hp!r}")
      config.loss[hp] = value
    for key, value in {**loss.get("overrides", {}), **sweep.base_overrides}.items():
      _override(config, key, value, loss["label"])
    # A loss that takes inputs from the noise model (the transition matrix) trains one setting per run.
    together = sweep.group_noise and not run_settings.noise_inputs(config)
    groups = [noises] if together else [[n] for n in noises]
    for group in groups:
      run_settings.validate_static(config, group)
      suffix = "" if together else "__" + slug(noise_label(group[0]))
      runs.append({"id": slug(loss["label"]) + suffix, "loss": dict(loss), "noises": group, "config": config})
  return runs


def _override(config, key, value, label, prefix=""):
  """config[key] = value; a dict value for a sub-config ({'data': {'augment': 'none'}}) sets its keys."""
  if key not in config:
    raise ValueError(f"loss {label!r}: override of unknown config key {prefix + key!r}")
  if isinstance(config[key], ml_collections.ConfigDict) and hasattr(value, "items"):
    for k, v in value.items():
      _override(config[key], k, v, label, f"{prefix}{key}.")
  else:
    config[key] = value


def check_reuse(sweep: ml_collections.ConfigDict, workdir: str, runs: list[dict]) -> None:
  """A run directory is reused (resumed, or its finished result kept) only when the config it was run with
  equals the one this sweep would run now. Otherwise: an error naming the differing keys, or with
  `rerun_changed` the old run is moved aside (renamed, never deleted) and run again."""
  stale = []
  for r in runs:
    path = os.path.join(workdir, "runs", r["id"], "config.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      stored = json.load(f)
    diff = checkpoints.config_differences(
      stored, r["config"], {"noise_settings": run_settings.noise_settings(r["config"], r["noises"])}
    )
    if diff and sweep.rerun_changed:
      print(
        f"{r['id']}: config changed ({', '.join(diff[:4])}); previous run moved to "
        f"{checkpoints.move_aside(os.path.dirname(path))}"
      )
    elif diff:
      stale.append(f"  {r['id']}: {', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}")
  if stale:
    raise checkpoints.ConfigMismatchError(
      f"{len(stale)} run(s) in {workdir} were run with a different config than this sweep's:\n"
      + "\n".join(stale)
      + "\nUse a new --workdir, or --config.rerun_changed=True to move those runs aside "
      "(renamed, never deleted) and run them again."
    )


def run(sweep: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  runs = expand(sweep)
  check_reuse(sweep, workdir, runs)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "sweep_config.json"), "w") as f:
    f.write(sweep.to_json(indent=2))
  t0 = time.time()
  for i, r in enumerate(runs, 1):
    run_dir = os.path.join(workdir, "runs", r["id"])
    if report.finished(os.path.join(run_dir, "summary.json")):
      print(f"[{i}/{len(runs)}] {r['id']}: done already")
      continue
    print(
      f"[{i}/{len(runs)}] {r['id']}: {len(r['noises'])} noise setting(s) × {sweep.num_seeds} seeds "
      f"({time.time() - t0:.0f}s into this sweep)",
      flush=True,
    )
    try:
      train.train_and_evaluate(r["config"], run_dir, r["noises"])
    except train.NonFiniteError as e:
      # A loss that diverges is a result, not a crash of the sweep: recorded as failed in its summary.
      print(f"  {r['id']} failed: {e}")
    report.write(workdir, runs)
  paths = report.write(workdir, runs)
  print(
    f"\nSweep finished in {time.time() - t0:.0f}s.\n  table: {paths['md']}\n  csv:   {paths['csv']}\n"
    f"  plots: {', '.join(paths['plots'])}"
  )
  return runs


if __name__ == "__main__":
  runtime.cli(run, "Sweep config file.")
