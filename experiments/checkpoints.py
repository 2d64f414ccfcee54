"""Checkpoints (orbax) and the workdir guard that keeps two runs' files from ever mixing.

A checkpoint holds the whole TrainState (params, optimizer state, BatchNorm statistics, pruning weights,
step) and, as JSON beside it, the epoch and the metrics history, so a resumed run reports exactly what an
uninterrupted one would. orbax writes to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

# Keys that change how a run is carried out, not what it computes: they may differ on resume.
RUNTIME_KEYS = (
  "progress",
  "overwrite",
  "checkpoint_every_epochs",
  "keep_checkpoints",
  "steps_per_call",
  "loop_free",
  "distributed",
  "eval_batch_size",
  "data_dir",
  "num_devices",
  "input_workers",
  "input_prefetch",
)


class ConfigMismatchError(ValueError):
  pass


def _comparable(config_dict: dict) -> dict:
  return {k: v for k, v in config_dict.items() if k not in RUNTIME_KEYS}


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = list(v) if isinstance(v, tuple) else v
  return out


def config_differences(stored: dict, config, extra: dict | None = None) -> list[str]:
  """'key: stored -> current' for every key (runtime keys aside) where a stored run config differs from
  `config` (+ `extra`), sorted; [] when they describe the same computation."""
  mine = _flatten(_comparable({**json.loads(config.to_json()), **(extra or {})}))
  theirs = _flatten(_comparable(stored))
  return [
    f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}"
    for k in sorted(set(mine) | set(theirs))
    if mine.get(k) != theirs.get(k)
  ]


def move_aside(workdir: str) -> str:
  """Renames WORKDIR to WORKDIR.old-<timestamp> (never deletes) and returns the new name."""
  aside = f"{workdir.rstrip('/')}.old-{time.strftime('%Y%m%d-%H%M%S')}"
  shutil.move(workdir, aside)
  return aside


def guard_workdir(workdir: str, config, extra: dict | None = None) -> None:
  """Refuses a workdir that holds a run of a different config (or moves it aside with overwrite=True).

  Nothing is deleted: with `overwrite`, the old run is renamed to WORKDIR.old-<timestamp>.
  """
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      diff = config_differences(json.load(f), config, extra)
    if diff:
      if not config.overwrite:
        raise ConfigMismatchError(
          f"workdir {workdir!r} holds a run of a different config ({', '.join(diff[:8])}). Use a new "
          "--workdir, or --config.overwrite=True to move the old run aside (it is renamed, never deleted)."
        )
      if jax.process_index() == 0:
        print(f"Moved the previous run in {workdir} to {move_aside(workdir)}")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump({**json.loads(config.to_json()), **(extra or {})}, f, indent=2)


def has_checkpoint(workdir: str) -> bool:
  """Whether WORKDIR holds a complete checkpoint to resume from."""
  path = os.path.join(workdir, "checkpoints")
  return os.path.isdir(path) and bool(ocp.utils.checkpoint_steps(path))


class Checkpointer:
  """Keeps the last `keep` checkpoints of (TrainState, JSON metadata) under WORKDIR/checkpoints."""

  def __init__(self, workdir: str, keep: int):
    self.last_step = None  # the step of the latest checkpoint written or restored
    self._manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True),
      item_names=("state", "meta"),
    )

  def save(self, step: int, state, meta: dict) -> None:
    if step == self.last_step:
      return  # this exact state is already the latest checkpoint
    self.last_step = step
    self._manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
    )
    # Asynchronous: orbax has copied the arrays to host memory when save() returns and writes them in the
    # background (atomically); training goes on. close() waits for the last write.

  def restore_latest(self, abstract_state):
    """Returns (state, meta) of the latest complete checkpoint, or None if there is none."""
    step = self._manager.latest_step()
    if step is None:
      return None
    self.last_step = step
    out = self._manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    )
    return out.state, out.meta

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
