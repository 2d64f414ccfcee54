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

from experiments import multihost

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
  # Whether a result is accepted, not what is computed (and absent from the configs of older runs).
  "skip_nonfinite_max_share",
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


def _jsonable(value) -> bool:
  try:
    json.dumps(value)
  except TypeError:
    return False
  return True


def loss_hparams(config) -> dict:
  """Every hyperparameter of the config's loss as the library resolves it, its defaults included (those the
  trainer fills in from the noise model, e.g. a transition matrix, aside: they follow from config.noise): a
  run made under another library default is another computation, though its config is the same."""
  import robust_losses  # local: only this record needs the library

  given = {k: v for k, v in config.loss.items() if k != "name" and v is not None}
  hparams = {**robust_losses.hparam_defaults(config.loss.name), **given}
  return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(hparams.items()) if _jsonable(v)}


def run_record(config, extra: dict | None = None) -> dict:
  """What a run directory's config.json holds: the config, `extra` (a sweep row's noise settings) and the
  loss's resolved hyperparameters (`loss_hparams`)."""
  return {**json.loads(config.to_json()), **(extra or {}), "loss_hparams": loss_hparams(config)}


def config_differences(stored: dict, config, extra: dict | None = None, ignore=()) -> list[str]:
  """'key: stored -> current' for every key (runtime keys and `ignore` aside) where a stored run record
  (config.json) differs from `config` (+ `extra`), sorted; [] when they describe the same computation. A run
  recorded without its loss's resolved hyperparameters (made before they were recorded) differs: which
  library defaults it ran with is unknown."""
  mine = _flatten(_comparable(run_record(config, extra)))
  theirs = _flatten(_comparable(stored))
  if "loss_hparams" not in stored:
    theirs = {k: v for k, v in theirs.items() if not k.startswith("loss_hparams.")}
    mine = {k: v for k, v in mine.items() if not k.startswith("loss_hparams.")}
    unknown = ["loss_hparams: not recorded (a run made before the loss's resolved hyperparameters were) -> recorded"]
  else:
    unknown = []
  return unknown + [
    f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}"
    for k in sorted(set(mine) | set(theirs))
    if mine.get(k) != theirs.get(k) and k not in ignore
  ]


def extension_problem(workdir: str, stored: dict, config, steps_per_epoch: int = 10) -> str | None:
  """Why a run of `stored` (finished or not) cannot continue to `config`, which differs from it only by a
  larger num_epochs; None when it can: a checkpoint exists and the learning rate of every step already
  trained is the same under the longer schedule (true of constant, step and exponential schedules, not of
  cosine, whose decay is stretched to the new length)."""
  import ml_collections

  from experiments import optimizers  # local: checkpoints stays free of the optimizer stack for readers

  if not has_checkpoint(workdir):
    return f"{workdir} holds no checkpoint to continue from"
  old = ml_collections.ConfigDict(json.loads(config.to_json()))
  old.num_epochs = stored["num_epochs"]
  steps = range(stored["num_epochs"] * steps_per_epoch)
  before = optimizers.learning_rate_fn(old, steps_per_epoch)
  after = optimizers.learning_rate_fn(config, steps_per_epoch)
  changed = next((s for s in steps if float(before(s)) != float(after(s))), None)
  if changed is not None:
    return (
      f"schedule={config.schedule!r} gives the {stored['num_epochs']} finished epochs other learning rates over "
      f"{config.num_epochs} epochs (epoch {changed // steps_per_epoch + 1}: {float(before(changed)):.4g} -> "
      f"{float(after(changed)):.4g}), so the longer run is a different training from its start"
    )
  return None


def move_aside(workdir: str) -> str:
  """Renames WORKDIR to WORKDIR.old-<timestamp> (never deletes) and returns the new name."""
  aside = f"{workdir.rstrip('/')}.old-{time.strftime('%Y%m%d-%H%M%S')}"
  shutil.move(workdir, aside)
  return aside


def guard_workdir(workdir: str, config, extra: dict | None = None, steps_per_epoch: int = 10) -> None:
  """Refuses a workdir that holds a run of a different config (or moves it aside with overwrite=True).

  A run whose config differs only by a larger num_epochs is continued from its last checkpoint when the
  learning rates of its trained steps stay the same (`extension_problem`); otherwise the error says why.
  Nothing is deleted: with `overwrite`, the old run is renamed to WORKDIR.old-<timestamp>.
  In a multi-process run process 0 alone reads, decides and writes config.json, and the others wait for it
  and raise its error: a process that read the file while process 0 rewrote it would see half a file.
  """
  error = None
  if jax.process_index() == 0:
    try:
      _guard_workdir(workdir, config, extra, steps_per_epoch)
    except ValueError as e:
      error = e
  if jax.process_count() > 1:
    message = multihost.Agreement("guard_workdir").gather(str(error) if error else "")[0]
    if message and error is None:
      raise ConfigMismatchError(message)
  if error is not None:
    raise error


def _guard_workdir(workdir: str, config, extra: dict | None, steps_per_epoch: int) -> None:
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        stored = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigMismatchError(
        f"workdir {workdir!r} holds an unreadable config.json ({e}); move the workdir aside or use a new --workdir"
      ) from None
    diff = config_differences(stored, config, extra)
    longer = len(diff) == 1 and diff[0].startswith("num_epochs:") and stored["num_epochs"] < config.num_epochs
    why_not = extension_problem(workdir, stored, config, steps_per_epoch) if longer else None
    if longer and why_not is None and not config.overwrite:
      print(f"Continuing the {stored['num_epochs']}-epoch run in {workdir} to {config.num_epochs} epochs")
    elif diff:
      if not config.overwrite:
        reason = f" It cannot be continued to more epochs: {why_not}." if why_not else ""
        raise ConfigMismatchError(
          f"workdir {workdir!r} holds a run of a different config ({', '.join(diff[:8])}).{reason} Use a new "
          "--workdir, or --config.overwrite=True to move the old run aside (it is renamed, never deleted)."
        )
      print(f"Moved the previous run in {workdir} to {move_aside(workdir)}")
  os.makedirs(workdir, exist_ok=True)
  with open(path + ".tmp", "w") as f:  # written whole, then renamed: a kill mid-write leaves the old file
    json.dump(run_record(config, extra), f, indent=2)
  os.replace(path + ".tmp", path)


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
