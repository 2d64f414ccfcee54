"""Fine-tuning: start a run from pretrained weights (config.init_from), optionally training only the head.

The weights come from an orbax checkpoint of this project (a workdir, its checkpoints/ or one step's
directory; replica 0 of a multi-seed run) or a flax msgpack file of {'params', 'batch_stats'}; the formats
are in docs/CHECKPOINTS.md. Every pretrained array must fit the model by path and shape, except the
classifier, the top-level 'head', which is re-initialised when its shape differs (another number of classes).
"""

from __future__ import annotations

import os

import flax
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

HEAD = "head"
COLLECTIONS = ("params", "batch_stats")
_FORMATS = (
  "a workdir of this project (with checkpoints/), its checkpoints/ directory, one step's directory "
  "(checkpoints/<step>) or a flax msgpack file of {'params', 'batch_stats'} (docs/CHECKPOINTS.md)"
)


# ---------------------------------------------------------------------------------------------- loading
def validate(config) -> None:
  """Checks that need no data: init_from, when set, exists."""
  if config.init_from and not os.path.exists(config.init_from):
    raise FileNotFoundError(f"init_from={config.init_from!r} does not exist; it must be {_FORMATS}")


def load_pretrained(path: str) -> dict:
  """{'params': ..., 'batch_stats': ...} (numpy trees, no replica axis; batch_stats may be {}) from `path`."""
  return load(path)[0]


def load(path: str) -> tuple[dict, str]:
  """The pretrained trees and a description of where they came from (for the log line)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"init_from={path!r} does not exist; it must be {_FORMATS}")
  if os.path.isdir(path):
    state_dir, step = _state_dir(path)
    return _load_orbax(state_dir), f"orbax checkpoint {state_dir} (step {step}, replica 0)"
  return _load_msgpack(path), f"msgpack file {path}"


def _state_dir(path: str) -> tuple[str, str]:
  """The 'state' item directory of the checkpoint that `path` names, and its step (for the log)."""
  if os.path.isdir(os.path.join(path, "checkpoints")):  # a workdir
    path = os.path.join(path, "checkpoints")
  if os.path.isdir(os.path.join(path, "state")):  # one step's directory
    return os.path.join(path, "state"), os.path.basename(os.path.normpath(path))
  if os.path.exists(os.path.join(path, "_METADATA")):  # the state item itself
    return path, os.path.basename(os.path.dirname(os.path.normpath(path)))
  # A checkpoints/ directory: its latest finalised step (a save cut short is a temporary directory, skipped).
  steps = {ocp.utils.step_from_checkpoint_name(p.name): p for p in ocp.utils.checkpoint_steps_paths(path)}
  if steps and os.path.isdir(os.path.join(steps[max(steps)], "state")):
    return os.path.join(steps[max(steps)], "state"), str(max(steps))
  raise ValueError(f"init_from={path!r} is a directory with no complete checkpoint; it must be {_FORMATS}")


def _load_orbax(state_dir: str) -> dict:
  """Replica 0 of params and batch_stats of a saved TrainState, restored as numpy arrays.

  No abstract target: the tree comes from the checkpoint's own metadata, so a checkpoint of any model, replica
  count or device count loads (restoring as numpy ignores the saved sharding); only params and batch_stats
  are read, not the optimizer or (possibly large) per-example loss state.
  """
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(epath.Path(state_dir)).tree
  except Exception as e:  # orbax raises assorted types for a half-written or foreign directory
    raise ValueError(
      f"init_from: cannot read the orbax checkpoint in {state_dir!r} ({type(e).__name__}: {e}); it must be {_FORMATS}"
    ) from e
  if not isinstance(tree, dict) or "params" not in tree:
    keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
    raise ValueError(
      f"init_from: the checkpoint in {state_dir!r} holds no 'params' (found {keys}); "
      "expected a TrainState saved by experiments/checkpoints.py"
    )
  item = {k: tree.get(k) or {} for k in COLLECTIONS}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  out = handler.restore(
    epath.Path(state_dir), args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
  )
  return {k: jax.tree.map(lambda a: np.asarray(a)[0], out.get(k) or {}) for k in COLLECTIONS}


def _load_msgpack(path: str) -> dict:
  with open(path, "rb") as f:
    data = f.read()
  try:
    tree = flax.serialization.msgpack_restore(data)
  except Exception as e:  # msgpack's ExtraData / 'incomplete input' ValueErrors, numpy's on a bad array
    raise ValueError(
      f"init_from={path!r} is not a readable flax msgpack file ({type(e).__name__}: {e}); it must be {_FORMATS}"
    ) from e
  if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
    found = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
    raise ValueError(
      f"init_from={path!r} holds no 'params' tree (top level: {found}); save "
      "flax.serialization.to_bytes({'params': params, 'batch_stats': batch_stats})"
    )
  return {k: jax.tree.map(np.asarray, tree.get(k) or {}) for k in COLLECTIONS}


# ---------------------------------------------------------------------------------------------- merging
def _name(path: tuple) -> str:
  return "/".join(map(str, path))


def merge(init_vars: dict, pretrained: dict) -> tuple[dict, list[str]]:
  """The model's variables with every array taken from `pretrained`, and notes on what was re-initialised.

  Paths and shapes must match, except the top-level 'head' (in every collection), which keeps its
  initial value when its shapes differ or the pretrained weights have none. dtypes follow `init_vars`.
  """
  merged, notes, _ = _merge(init_vars, pretrained)
  return merged, notes


def _merge(init_vars, pretrained):
  """merge() plus the set of re-initialised paths."""
  init = traverse_util.flatten_dict(dict(init_vars))
  pre = traverse_util.flatten_dict(dict(pretrained))
  shape = lambda a: tuple(np.shape(a))
  is_head = lambda p: len(p) > 2 and p[1] == HEAD
  head_init = {p: shape(a) for p, a in init.items() if is_head(p)}
  head_pre = {p: shape(a) for p, a in pre.items() if is_head(p)}
  notes, reinit = [], set()
  if head_init and head_pre.keys() == head_init.keys() and head_pre != head_init:
    diff = [f"{_name(p)} {head_pre[p]} -> {s}" for p, s in head_init.items() if head_pre[p] != s]
    notes.append(f"head re-initialised, its shapes differ (another number of classes?): {', '.join(diff)}")
    reinit = set(head_init)
  elif head_init and not head_pre:
    notes.append("head re-initialised: the pretrained weights have none")
    reinit = set(head_init)

  problems = []
  for p, a in init.items():
    if p in reinit:
      continue
    if p not in pre:
      problems.append(f"{_name(p)}: model {shape(a)}, missing from the pretrained weights")
    elif shape(pre[p]) != shape(a):
      problems.append(f"{_name(p)}: model {shape(a)} vs pretrained {shape(pre[p])}")
  problems += [
    f"{_name(p)}: pretrained {shape(b)}, not in the model"
    for p, b in pre.items()
    if p not in init and not (p in head_pre and reinit)
  ]
  if problems:
    shown = "; ".join(problems[:12]) + (f"; ... and {len(problems) - 12} more" if len(problems) > 12 else "")
    raise ValueError(
      f"the pretrained weights do not fit the model (another architecture?), {len(problems)} "
      f"mismatched path(s): {shown}"
    )
  flat = {p: np.asarray(a) if p in reinit else np.asarray(pre[p]).astype(np.asarray(a).dtype) for p, a in init.items()}
  out = traverse_util.unflatten_dict(flat) if flat else {}
  return {k: out.get(k, {}) for k in init_vars}, notes, reinit


# ------------------------------------------------------------------------------------------- freezing
def trainable_mask(params):
  """True for the leaves under the top-level 'head' (the classifier), False elsewhere."""
  if HEAD not in params:
    raise ValueError(
      f"freeze_backbone needs the classifier as the top-level params entry {HEAD!r}; the model has {sorted(params)}"
    )
  return jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == HEAD, params)


def freeze_backbone(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` on the head only; every other update is exactly zero (weight decay, inside `tx`, included)."""
  labels = lambda params: jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(params))
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# ---------------------------------------------------------------------------------------- the trainer
def _local(a) -> np.ndarray:
  """Host copy of a replicated array (its local shard is the whole array, also on a multi-host mesh)."""
  return np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else np.asarray(a)


def initialize(config, state, num_replicas: int, pretrained: tuple[dict, str] | None = None):
  """`state` with params and batch_stats from config.init_from (unchanged when it is ''); `pretrained`:
  what `load(config.init_from)` returned, when the caller read it already (to fail before compiling).

  Every replica gets the pretrained arrays; re-initialised parts (a head of another shape) keep each
  replica's own initial values, so seeds still differ there. The optimizer state is kept: the states of this
  project's optimizers (momentum, Adam moments, step counts) do not depend on parameter values.
  """
  if not config.init_from:
    return state
  pretrained, source = pretrained or load(config.init_from)
  old = {"params": state.params, "batch_stats": state.batch_stats}
  for leaf in jax.tree.leaves(old):
    if np.shape(leaf)[:1] != (num_replicas,):
      raise ValueError(f"state leaves must have a leading replica axis of {num_replicas}; got {np.shape(leaf)}")
  init_vars = jax.tree.map(lambda a: _local(a)[0], old)
  merged, notes, reinit = _merge(init_vars, pretrained)

  flat_old = traverse_util.flatten_dict(old)
  flat_new = {}
  for p, m in traverse_util.flatten_dict(merged).items():
    o = flat_old[p]
    flat_new[p] = o if p in reinit else jax.device_put(np.broadcast_to(m, (num_replicas, *m.shape)), o.sharding)
  new = traverse_util.unflatten_dict(flat_new) if flat_new else {}
  if jax.process_index() == 0:
    loaded = len(flat_new) - len(reinit)
    print(
      f"Initialised from {source}: {loaded} arrays loaded; {'; '.join(notes) if notes else 'nothing re-initialised'}",
      flush=True,
    )
  return state.replace(params=new.get("params", {}), batch_stats=new.get("batch_stats", {}))
