"""Trains a classifier on noisy labels with a robust loss; data-parallel over all devices.

  python -m experiments.train --config=configs/digits.py --workdir=runs/digits [--config.key=value ...]

Rerunning the same command on the same workdir resumes from the last complete checkpoint. WORKDIR gets
config.json, metrics.jsonl (one line per epoch), TensorBoard events in tb/, checkpoints/ and, at the end,
summary.json. The compiled parts live in train_lib.py; this file is the loop around them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_losses
from experiments import checkpoints, finetune, input_pipeline, models, noise, optimizers, streaming, train_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteError(FloatingPointError):
  pass


# ----------------------------------------------------------------------------------------------- config
def loss_hparams(config) -> dict:
  """The hyperparameters set in `config.loss` (unset placeholders mean the loss's own default)."""
  return {k: v for k, v in config.loss.items() if k != "name" and v is not None}


def noise_settings(config, settings=None) -> list[dict]:
  """The noise settings of a run: config.noise alone, or several (a sweep row trained as one program)."""
  if not settings:
    return [{"kind": config.noise.kind, "rate": float(config.noise.rate)}]
  return [{"kind": n["kind"], "rate": float(n["rate"])} for n in settings]


def _matrix(config):
  return None if config.noise.matrix is None else np.asarray(config.noise.matrix)


# What the loop can give a loss from the noise model, by hyperparameter name (the loss-state protocol's
# inputs): Patrini et al.'s known-T setting uses the noise model's own expected transition matrix.
NOISE_INPUTS = ("transition_matrix", "noise_rate")


def noise_inputs(config) -> list[str]:
  """The required loss hyperparameters the config leaves to the loop to fill from the noise model."""
  missing = [k for k in robust_losses.required_hparams(config.loss.name) if k not in loss_hparams(config)]
  unknown = [k for k in missing if k not in NOISE_INPUTS]
  if unknown:
    raise ValueError(f"loss {config.loss.name!r} needs hyperparameter(s) {unknown}: set loss.<name> in the config")
  return missing


def build_loss(config, num_classes: int, settings: list[dict], realised_rate: float = 0.0):
  """The configured loss; inputs it needs from the noise model are filled in (`realised_rate`: the share of
  flipped training labels, for the oracle reference losses; 0 while validating, before labels exist)."""
  hparams = loss_hparams(config)
  needed = noise_inputs(config)
  if needed and len(settings) > 1:
    raise ValueError(
      f"{config.loss.name} uses the noise model's {needed}, so it trains one noise setting per run; got {len(settings)}"
    )
  if "transition_matrix" in needed:
    hparams["transition_matrix"] = noise.transition_matrix(
      settings[0]["kind"], settings[0]["rate"], num_classes=num_classes, dataset=config.dataset, matrix=_matrix(config)
    )
  if "noise_rate" in needed:
    hparams["noise_rate"] = float(realised_rate)
  return robust_losses.get(config.loss.name, **hparams)


def data_kwargs(config) -> dict:
  """Arguments of input_pipeline.load (and validate) from the config ('' / 0 mean the dataset default)."""
  return dict(
    data_dir=config.data_dir or None,
    data_path=config.data_path or None,
    real_label_key=config.real_label_key or None,
    image_size=config.image_size or None,
    val_size=config.val_size,
    val_seed=config.seed,
    tfds_config=config.tfds_config or None,
    train_split=config.train_split or None,
    num_classes=config.num_classes or None,
    train_list=config.train_list or None,
    test_list=config.test_list or None,
    val_list=config.val_list or None,
    skip_corrupt=config.skip_corrupt,
  )


def input_mode(config) -> str:
  """'memory' or 'stream': config.input, or for 'auto' streaming when the decoded training images exceed
  input_memory_gb (digits and npz are in memory anyway)."""
  if config.input != "auto":
    return config.input
  size = input_pipeline.train_images_bytes(config.dataset, **data_kwargs(config))
  return "memory" if size is None or size <= config.input_memory_gb * 2**30 else "stream"


def load_data(config):
  """The dataset: whole in host memory (`Dataset`) or opened for streaming (`StreamDataset`)."""
  mode = input_mode(config)
  if mode == "stream" and not config.steps_per_call:
    raise ValueError(
      "steps_per_call=0 runs a whole epoch per call, which would hold an epoch of decoded "
      "batches in host memory when streaming; set steps_per_call >= 1 (e.g. 10)"
    )
  if jax.process_index() == 0 and config.input == "auto" and mode == "stream":
    print(
      f"input: streaming {config.dataset} (decoded training images exceed input_memory_gb={config.input_memory_gb})"
    )
  if mode == "memory":
    return input_pipeline.load(config.dataset, **data_kwargs(config))
  return input_pipeline.open_stream(
    config.dataset, **data_kwargs(config), stats_max_examples=config.stats_max_examples, workers=config.input_workers
  )


def validate_static(config, settings=None) -> None:
  """Checks that need no data; run before anything is loaded or compiled."""
  input_pipeline.validate(config.dataset, **data_kwargs(config))
  if config.input not in input_pipeline.INPUT_MODES:
    raise ValueError(f"input={config.input!r} is unknown; valid choices: {list(input_pipeline.INPUT_MODES)}")
  for key, low in (("input_memory_gb", 0), ("input_workers", 0), ("input_prefetch", 1), ("stats_max_examples", 1)):
    if not config[key] >= low or (key == "input_memory_gb" and config[key] == 0):
      raise ValueError(
        f"{key}={config[key]!r} is out of range; valid range is {'> 0' if key == 'input_memory_gb' else f'>= {low}'}"
      )
  if config.init_from and not os.path.exists(config.init_from):
    raise ValueError(
      f"init_from={config.init_from!r}: no such file or directory (a workdir, checkpoint "
      "directory or flax msgpack file)"
    )
  if config.freeze_backbone and not config.init_from:
    raise ValueError(
      "freeze_backbone=True trains only the head on a fixed backbone: set init_from to the pretrained weights"
    )
  if config.model != "auto" and config.model not in models.names():
    raise ValueError(f"model={config.model!r} is unknown; valid choices: {['auto', *models.names()]}")
  if config.loss.name not in robust_losses.names():
    raise ValueError(f"loss.name={config.loss.name!r} is unknown; valid choices: {robust_losses.names()}")
  for n in noise_settings(config, settings):
    if n["kind"] not in noise.KINDS:
      raise ValueError(f"noise.kind={n['kind']!r} is unknown; valid choices: {noise.KINDS}")
    if not 0 <= n["rate"] <= 1:
      raise ValueError(f"noise.rate={n['rate']!r} is out of range; valid range is [0, 1]")
  if config.compute_dtype not in DTYPES:
    raise ValueError(f"compute_dtype={config.compute_dtype!r} is unknown; valid choices: {list(DTYPES)}")
  for key, low in (
    ("num_epochs", 1),
    ("batch_size", 1),
    ("num_seeds", 1),
    ("eval_batch_size", 1),
    ("steps_per_call", 0),
    ("checkpoint_every_epochs", 1),
    ("keep_checkpoints", 1),
    ("val_size", 0),
    ("train_eval_max_examples", 0),
  ):
    if config[key] < low:
      raise ValueError(f"{key}={config[key]!r} is out of range; valid range is >= {low}")
  ndev = config.num_devices or jax.device_count()
  if not 0 <= config.num_devices <= jax.device_count():
    raise ValueError(
      f"num_devices={config.num_devices} is out of range; valid range is 0 (all) to {jax.device_count()}"
    )
  if config.batch_size % ndev:
    raise ValueError(
      f"batch_size={config.batch_size} is not divisible by the device count {ndev}; use a multiple of {ndev}"
    )
  optimizers.validate(config)
  # Hyperparameter ranges: the registry checks them at construction (placeholders for what the noise model
  # provides later), and the loss's schedules must act within the run.
  placeholders = {k: np.eye(2) if k == "transition_matrix" else 0.0 for k in noise_inputs(config)}
  robust_losses.get(config.loss.name, **loss_hparams(config), **placeholders).check_training(config.num_epochs)


def validate_with_data(config, data, settings: list[dict]) -> None:
  n = len(data.y_train)
  if config.batch_size > n:
    raise ValueError(f"batch_size={config.batch_size} is larger than the training set ({n} examples)")
  for n in settings:
    noise.validate(n["kind"], n["rate"], num_classes=data.num_classes, dataset=config.dataset, matrix=_matrix(config))
  if any(n["kind"] == "real" for n in settings) and data.real_noisy_labels is None:
    raise ValueError(
      f"noise.kind='real' needs a dataset with human/web labels; {config.dataset!r} has none "
      "(use cifar10_n, cifar100_n or controlled_noisy_web_labels)"
    )
  build_loss(config, data.num_classes, settings)


# ------------------------------------------------------------------------------------------------ setup
def make_program(config, data, loss_fn) -> train_lib.Program:
  input_shape = data.image_shape
  name = models.default_for(input_shape) if config.model == "auto" else config.model
  model = models.create(
    name,
    num_classes=data.num_classes,
    input_shape=input_shape,
    axis_name=train_lib.AXIS,
    dtype=DTYPES[config.compute_dtype],
  )
  steps_per_epoch = len(data.y_train) // config.batch_size  # the remainder is dropped, reshuffled each epoch
  tx = optimizers.create(config, steps_per_epoch)
  if config.freeze_backbone:
    tx = finetune.freeze_backbone(tx)
  return train_lib.Program(
    model=model,
    loss_fn=loss_fn,
    tx=tx,
    mesh=train_lib.make_mesh(jax.devices()[: config.num_devices] if config.num_devices else None),
    batch_size=config.batch_size,
    num_train=len(data.y_train),
    steps_per_epoch=steps_per_epoch,
    eval_batch_size=config.eval_batch_size,
    mean=tuple(data.mean),
    std=tuple(data.std),
    augment_crop_pad=data.augment_crop_pad,
    augment_flip=data.augment_flip,
    skip_nonfinite=config.skip_nonfinite,
    num_classes=data.num_classes,
    compute_dtype=DTYPES[config.compute_dtype],
    loop_free=loop_free(config, model),
    streamed=isinstance(data, input_pipeline.StreamDataset),
    freeze_backbone=config.freeze_backbone,
  )


def loop_free(config, model) -> bool:
  """config.loop_free, or when unset (auto): on the CPU backend for convolutional models only (an MLP's
  steps run faster inside lax.scan; docs/PERFORMANCE.md)."""
  if config.loop_free is not None:
    return config.loop_free
  return jax.default_backend() == "cpu" and not isinstance(model, models.MLP)


def noisy_labels(config, data, replicas) -> list[noise.NoisyLabels]:
  """One noise draw per replica (noise setting, seed): each seed gets its own noisy labels."""
  return [
    noise.apply_noise(
      data.y_train,
      kind=n["kind"],
      rate=n["rate"],
      num_classes=data.num_classes,
      seed=s,
      dataset=config.dataset,
      matrix=_matrix(config),
      real_labels=data.real_noisy_labels,
    )
    for n, s in replicas
  ]


class _MemorySet:
  """An evaluation set already in host memory, padded and put on the devices once."""

  def __init__(self, prog, x):
    self.n, self.padded = len(x), train_lib.pad_for_eval(prog, len(x))
    x = train_lib.pad(x, self.padded)
    step = prog.mesh.size * prog.eval_batch_size if prog.loop_free else self.padded  # one call per block
    self.blocks = [train_lib.replicate(prog.mesh, x[i : i + step]) for i in range(0, self.padded, step)]

  def __iter__(self):
    return iter(self.blocks)


class _StreamedSet:
  """An evaluation set read from a source block by block (one eval batch per device); each process decodes
  only its devices' rows. Decoding block k+1 overlaps the (asynchronously dispatched) evaluation of k."""

  def __init__(self, prog, source, indices, workers):
    self.prog, self.source, self.workers = prog, source, workers
    self.n, self.padded = len(indices), train_lib.pad_for_eval(prog, len(indices))
    self.indices = train_lib.pad(np.asarray(indices), self.padded)  # padding repeats index 0, dropped later
    self.block = prog.mesh.size * prog.eval_batch_size
    self.rows = streaming.process_rows(prog.mesh, (self.block,))

  def __iter__(self):
    reading = streaming.Agreement("eval_input")
    for a in range(0, self.padded, self.block):
      local = reading.run(
        lambda: streaming.read(self.source, self.indices[a : a + self.block][self.rows], self.workers)
      )
      yield streaming.to_devices(self.prog.mesh, local, self.block)


class Evaluator:
  """Host side of evaluation: the evaluation sets on the devices (or streamed), and accuracy bookkeeping."""

  def __init__(self, prog, data, noisy, config):
    self.prog = prog
    n = len(data.y_train)
    limit = config.train_eval_max_examples or n
    self.train_subset = np.sort(np.random.default_rng(0).permutation(n)[:limit])
    if prog.streamed:
      make = lambda source, idx: _StreamedSet(prog, source, idx, config.input_workers)
      self.sets = {
        "test": make(data.test_source, np.arange(len(data.y_test))),
        "train": make(data.train_source, self.train_subset),
      }
      if data.val_source is not None:
        self.sets["val"] = make(data.val_source, np.arange(len(data.y_val)))
      self.train_full = lambda: make(data.train_source, np.arange(n))
    else:
      self.sets = {"test": _MemorySet(prog, data.x_test), "train": _MemorySet(prog, data.x_train[self.train_subset])}
      if data.x_val is not None:
        self.sets["val"] = _MemorySet(prog, data.x_val)
      self.train_full = lambda: _MemorySet(prog, data.x_train)
    self.y_test, self.y_val = data.y_test, data.y_val
    self.noisy = np.stack([nl.labels for nl in noisy])
    self.clean = data.y_train
    self.is_noisy = np.stack([nl.is_noisy for nl in noisy])
    self.R = len(noisy)

  def _run(self, fn, state, eval_set, labels):
    outs, start = [], 0
    for x in eval_set:
      outs.append(fn(state, x, train_lib.replicate(self.prog.mesh, labels[:, start : start + x.shape[0]])))
      start += x.shape[0]
    return jax.tree.map(lambda *o: np.concatenate([np.asarray(a) for a in o], axis=1), *outs)

  def predict(self, state, name):
    eval_set = self.sets[name]
    labels = np.zeros((self.R, eval_set.padded), np.int32)
    pred, _ = self._run(train_lib.eval_fn(self.prog), state, eval_set, labels)
    return pred[:, : eval_set.n]

  def refresh_loss_state(self, state):
    """The loss's `refresh` on the whole training set (eval mode) with each replica's noisy labels."""
    eval_set = self.train_full()
    labels = train_lib.pad(self.noisy, eval_set.padded, axis=1)
    _, rows = self._run(train_lib.eval_fn(self.prog, refresh=True), state, eval_set, labels)
    return jax.tree.map(lambda r: r[:, : eval_set.n], rows)

  def metrics(self, state) -> dict:
    out = {"test_accuracy": (self.predict(state, "test") == self.y_test).mean(1)}
    if "val" in self.sets:
      out["val_accuracy"] = (self.predict(state, "val") == self.y_val).mean(1)
    pred = self.predict(state, "train")
    sub = self.train_subset
    noisy, clean, is_noisy = self.noisy[:, sub], self.clean[sub], self.is_noisy[:, sub]
    with np.errstate(invalid="ignore", divide="ignore"):
      # Memorisation: accuracy on clean-labelled examples vs how many noisy labels the model has fitted.
      out["train_accuracy_clean_subset"] = ((pred == clean) & ~is_noisy).sum(1) / (~is_noisy).sum(1)
      out["train_memorised_noisy_subset"] = ((pred == noisy) & is_noisy).sum(1) / is_noisy.sum(1)
      out["train_corrected_noisy_subset"] = ((pred == clean) & is_noisy).sum(1) / is_noisy.sum(1)
    return out


# ------------------------------------------------------------------------------------------------- loop
def _jsonable(x):
  """JSON-safe copy: arrays as lists, non-finite floats as null (JSON has no NaN)."""
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, np.ndarray):
    return [_jsonable(v) for v in x.tolist()]
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, (np.floating, np.integer)):
    return _jsonable(x.item())
  return x


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_jsonable(obj), f, indent=2)
  os.replace(tmp, path)  # atomic: a reader never sees half a file


def clipping_diagnostics(accum) -> dict:
  """The clipped set as a detector of the flipped labels, over the epoch's batches: precision (share of
  clipped examples that were flipped), recall (share of flipped examples that were clipped) and the flipped
  share of the batches, to set against `clipped_fraction`. NaN where undefined (nothing clipped/flipped)."""
  hit, clipped, noisy = (np.asarray(accum[k], np.float64) for k in ("clipped_noisy", "clipped", "noisy"))
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "clipped_precision": np.where(clipped > 0, hit / clipped, np.nan),
      "clipped_recall": np.where(noisy > 0, hit / noisy, np.nan),
      "noisy_fraction": noisy / max(accum["steps"], 1),
    }


def summarise(config, history, noisy, replicas, train_seconds, status, error=None) -> dict:
  select = "val_accuracy" if config.val_size else "test_accuracy"
  per_seed = []
  for r, (setting, seed) in enumerate(replicas):
    curve = [h[select][r] for h in history]
    best = int(np.argmax(curve)) if curve else -1
    per_seed.append(
      {
        "seed": seed,
        "noise_kind": setting["kind"],
        "noise_rate": setting["rate"],
        "test_accuracy_last": history[-1]["test_accuracy"][r] if history else None,
        "test_accuracy_best": history[best]["test_accuracy"][r] if history else None,
        "best_epoch": best + 1 if history else None,  # 1-based: epochs completed
        "noise_rate_realised": noisy[r].rate_realised,
        "noise": noise.summary(noisy[r]),
      }
    )
  mean = lambda key: float(np.mean([p[key] for p in per_seed])) if history else None
  return {
    "status": status,
    "error": error,
    "test_accuracy_last": mean("test_accuracy_last"),
    "test_accuracy_best": mean("test_accuracy_best"),
    "best_epoch": per_seed[0]["best_epoch"] if len(replicas) == 1 else [p["best_epoch"] for p in per_seed],
    "best_epoch_selected_by": select,
    "noise_rate_realised": mean("noise_rate_realised") if per_seed else None,
    "train_seconds": train_seconds,
    "epochs_completed": len(history),
    "num_devices": config.num_devices or jax.device_count(),
    "seeds": sorted({s for _, s in replicas}),
    "per_seed": per_seed,
    "config": json.loads(config.to_json()),
  }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, settings: list[dict] | None = None) -> dict:
  """Trains `config.num_seeds` seeds (× each noise setting in `settings`, default config.noise) as vmapped
  replicas of one program; returns (and writes) the summary."""
  validate_static(config, settings)
  resuming = checkpoints.has_checkpoint(workdir)
  # Read pretrained weights before the data and any compilation: a wrong file fails in seconds. A resumed
  # run continues from its own checkpoint instead.
  pretrained = finetune.load(config.init_from) if config.init_from and not resuming else None
  data = load_data(config)
  settings_given = settings
  settings = noise_settings(config, settings)
  validate_with_data(config, data, settings)
  checkpoints.guard_workdir(workdir, config, {"noise_settings": settings} if settings_given else None)
  if config.init_from and pretrained is None and not checkpoints.has_checkpoint(workdir):
    pretrained = finetune.load(config.init_from)  # the guard moved another config's run aside
  lead = jax.process_index() == 0

  seeds = [config.seed + i for i in range(config.num_seeds)]
  replicas = [(n, s) for n in settings for s in seeds]
  noisy = noisy_labels(config, data, replicas)
  loss_fn = build_loss(config, data.num_classes, settings, np.mean([nl.rate_realised for nl in noisy]))
  prog = make_program(config, data, loss_fn)
  keys = train_lib.replicate(prog.mesh, jax.random.key_data(train_lib.replica_keys([s for _, s in replicas])))
  keys = jax.random.wrap_key_data(keys)
  labels = train_lib.replicate(prog.mesh, np.stack([nl.labels for nl in noisy]))
  is_noisy = train_lib.replicate(prog.mesh, np.stack([nl.is_noisy for nl in noisy]))
  evaluator = Evaluator(prog, data, noisy, config)
  spe, total = prog.steps_per_epoch, config.num_epochs * prog.steps_per_epoch
  chunk = 1 if prog.loop_free else (config.steps_per_call or spe)
  stream = x_train = None
  if prog.streamed:
    if lead and len(replicas) > 1:
      print(f"input: streamed batches are shared by all {len(replicas)} replicas, in seed {config.seed}'s order")
    stream = streaming.TrainStream(
      data.train_source,
      train_lib.host_epoch_order(config.seed, len(data.y_train)),
      config.batch_size,
      spe,
      streaming.process_rows(prog.mesh, (config.batch_size,)),
      workers=config.input_workers,
      prefetch=config.input_prefetch * chunk,
    )
    reading = streaming.Agreement("train_input")  # a read error on one process stops every process
  else:
    x_train = train_lib.replicate(prog.mesh, data.x_train)

  state = train_lib.init_state(prog, keys, data.image_shape)
  if pretrained is not None:
    state = finetune.initialize(config, state, len(replicas), pretrained)
  if jax.process_count() > 1:
    # The first cross-process collective (orbax's sync below) initialises gloo on CPU, which gives up if the
    # processes arrive more than 30 s apart; reading and compiling above can differ by that much under load.
    streaming.Agreement("ready").gather("")  # every process posts, then waits for all: a barrier
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  meta = {"step": 0, "history": [], "train_seconds": 0.0, "accum": None, "input": None}
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, meta = restored
    if lead:
      print(f"Resuming from step {meta['step']} (epoch {meta['step'] / prog.steps_per_epoch:.2f}) in {workdir}")
  history = meta["history"]
  # Streaming: the epoch's grain iterator, the next call's batches already on their way to the devices, and
  # the iterator's state at `step` (the prefetch runs ahead of it).
  batches = pending = consumed = None

  writer = None
  if lead:
    writer = _summary_writer(os.path.join(workdir, "tb"), purge_step=len(history) + 1)
  step, t0, seconds_before = int(meta["step"]), time.time(), float(meta["train_seconds"])
  saved_step = step if restored is not None else None
  train_chunk = train_lib.train_chunk_fn(prog)
  bar = None
  if lead and config.progress:
    from tqdm.auto import tqdm

    bar = tqdm(
      total=total,
      initial=step,
      unit="step",
      dynamic_ncols=True,
      file=sys.stdout,
      desc=f"{config.loss.name} " + ",".join(f"{n['kind']}:{n['rate']:g}" for n in settings),
    )

  def finish(status, error=None):
    summary = summarise(config, history, noisy, replicas, seconds_before + time.time() - t0, status, error)
    if lead:
      _write_json(os.path.join(workdir, "summary.json"), summary)
    return summary

  def save(accum):
    nonlocal saved_step
    if step == saved_step:
      return  # this exact state is already the latest checkpoint
    # Mid-epoch, the stream's position goes with the state: grain's iterator state at `step` (equal on every
    # process) and the batches it stands for.
    position = {"iterator": consumed, "batches": step % spe} if batches is not None and step % spe else None
    ckpt.save(
      step,
      state,
      {
        "step": step,
        "history": history,
        "accum": accum,
        "input": position,
        "train_seconds": seconds_before + time.time() - t0,
      },
    )
    saved_step = step

  def next_batches(n):
    """n streamed global batches: (images uint8 [n, B, ...], ids int32 [n, B]) sharded over the devices."""
    parts = reading.run(lambda: [next(batches) for _ in range(n)])
    ids, images = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    return (
      streaming.to_devices(prog.mesh, images, config.batch_size, axis=1),
      streaming.to_devices(prog.mesh, ids, config.batch_size, axis=1),
    )

  accum = meta["accum"]
  try:
    with _deferred_interrupts() as interrupted:
      while step < total:
        epoch = step // spe
        if step % spe == 0:
          zeros = [0.0] * len(replicas)  # per replica; lists so that they go into the JSON checkpoint metadata
          accum = {
            "loss": zeros,
            "accuracy": zeros,
            "clipped": zeros,
            "clipped_noisy": zeros,
            "noisy": zeros,
            "steps": 0,
            "skipped": [0] * len(replicas),
          }
          if loss_fn.refresh_due(epoch):
            rows = evaluator.refresh_loss_state(state)
            state = state.replace(loss_state=train_lib.replicate(prog.mesh, rows))
        if stream is not None and batches is None:
          saved = meta.get("input") if step % spe else None
          if saved is not None and saved["batches"] != step % spe:
            raise RuntimeError(
              f"the checkpoint's input position ({saved}) is not step {step}'s ({step % spe} "
              f"batches into epoch {epoch + 1}); the checkpoint is inconsistent"
            )
          # Rebuilt from the step, so a resumed run may use another number of devices or processes.
          batches = stream.epoch(epoch, stream.state_at(step % spe) if step % spe else None)
          consumed = batches.get_state()
        while step < (epoch + 1) * spe:
          n = min(chunk, (epoch + 1) * spe - step)
          steps = jnp.arange(step, step + n, dtype=jnp.int32)
          if stream is None:
            state, m = train_chunk(state, keys, labels, is_noisy, x_train, steps)
          else:
            state, m = train_chunk(state, keys, labels, is_noisy, *(pending or next_batches(n)), steps)
            consumed = batches.get_state()
            # While the devices run this call, decode and transfer the next one's batches.
            ahead = min(chunk, (epoch + 1) * spe - step - n)
            pending = next_batches(ahead) if ahead else None
          m = jax.tree.map(np.asarray, m)  # [R, n] each
          bad = ~m["finite"].all(0)
          if bad.any() and not config.skip_nonfinite:
            first = step + int(np.argmax(bad))
            raise NonFiniteError(
              f"non-finite loss, gradient or parameters at step {first} (epoch {first // spe + 1}) with loss "
              f"{config.loss.name}: the usual causes are a learning rate too high for this loss, "
              "a loss hyperparameter at the edge of its range, or float16/bfloat16 overflow. The last good "
              "checkpoint is kept; set --config.skip_nonfinite=True to skip such steps instead."
            )
          ok = m["finite"]
          for key in ("loss", "accuracy", "clipped", "clipped_noisy", "noisy"):
            accum[key] = (np.asarray(accum[key]) + np.where(ok, m[key], 0.0).sum(1)).tolist()
          accum["steps"] += n
          accum["skipped"] = (np.asarray(accum["skipped"]) + (~ok).sum(1)).tolist()
          step += n
          if bar is not None:
            bar.update(n)
            bar.set_postfix(
              loss=f"{np.mean(accum['loss']) / accum['steps']:.3f}",
              acc=f"{np.mean(accum['accuracy']) / accum['steps']:.3f}",
            )
          if interrupted() and step % spe:
            raise _Interrupted()  # mid-epoch: state, step and the epoch's accumulators belong together here

        ran = np.maximum(spe - np.asarray(accum["skipped"]), 1)  # steps whose metrics were finite
        record = {
          "epoch": epoch + 1,
          "step": step,
          "train_loss": np.asarray(accum["loss"]) / ran,
          "train_accuracy_noisy_labels": np.asarray(accum["accuracy"]) / ran,
          "clipped_fraction": np.asarray(accum["clipped"]) / ran,
          "skipped_steps": accum["skipped"],
        }
        record.update(clipping_diagnostics(accum))
        for key, value in state.loss_state.items():  # e.g. the share of truncated-Lq weights still 1
          record[f"loss_state_mean/{key}"] = np.asarray(value, np.float64).reshape(len(replicas), -1).mean(1)
        record.update(evaluator.metrics(state))
        record = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in record.items()}
        history.append(record)
        accum = batches = None
        if lead:
          _log_epoch(workdir, writer, history, bar)
        if (epoch + 1) % config.checkpoint_every_epochs == 0 or step == total:
          save(None)
        if interrupted():
          raise _Interrupted()
  except _Interrupted:
    save(accum)
    ckpt.wait()
    finish("interrupted")
    if lead:
      print(f"\nInterrupted: saved a checkpoint at step {step}; rerun the same command to resume.", flush=True)
    raise KeyboardInterrupt from None
  except NonFiniteError as e:
    finish("failed", str(e))
    raise
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
    if writer is not None:
      writer.close()
  summary = finish("completed")
  if lead:
    print(
      f"test accuracy last {summary['test_accuracy_last']:.4f} best {summary['test_accuracy_best']:.4f} "
      f"(epoch {summary['best_epoch']}), realised noise {summary['noise_rate_realised']:.3f}; "
      f"summary in {os.path.join(workdir, 'summary.json')}"
    )
  return summary


class _Interrupted(Exception):
  """Raised at a consistent point of the loop after SIGINT/SIGTERM arrived."""


@contextlib.contextmanager
def _deferred_interrupts():
  """SIGINT (Ctrl-C) and SIGTERM (e.g. a scheduler's preemption) only set a flag while training: the loop
  stops at the next point where state, step and metrics belong together (after a compiled call, never
  inside one or inside a checkpoint write), saves and exits. A second Ctrl-C interrupts at once."""
  received = []
  if threading_main():

    def handler(signum, frame):
      if received and signum == signal.SIGINT:
        raise KeyboardInterrupt
      received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield lambda: bool(received)
  finally:
    if threading_main():
      for sig, old in previous.items():
        signal.signal(sig, old)


def threading_main() -> bool:
  import threading

  return threading.current_thread() is threading.main_thread()


def _summary_writer(*args, **kwargs):
  """tensorboardX.SummaryWriter, imported without PyTorch: when torch is installed tensorboardX imports it
  (8 s here) only to support torch tensors, which we never log."""
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter
  finally:
    if blocked:
      del sys.modules["torch"]
  return SummaryWriter(*args, **kwargs)


def enable_compilation_cache(path: str | None = None) -> None:
  """Persistent XLA cache: identical programs (the same model's init, one loss's train step at another noise
  setting, a resumed run) are compiled once. XLA:CPU compiles RNG-heavy programs slowly (seconds each)."""
  path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser("~/.cache/robust_losses/jax")
  jax.config.update("jax_compilation_cache_dir", path)


def _log_epoch(workdir, writer, history, bar):
  record = history[-1]
  # Rewritten whole from the history, so a resumed run never repeats or loses a line.
  with open(os.path.join(workdir, "metrics.jsonl.tmp"), "w") as f:
    for h in history:
      f.write(json.dumps(_jsonable(h)) + "\n")
  os.replace(os.path.join(workdir, "metrics.jsonl.tmp"), os.path.join(workdir, "metrics.jsonl"))
  for key, value in record.items():
    if key in ("epoch", "step"):
      continue
    value = np.atleast_1d(np.asarray(value, np.float64))
    if np.isfinite(value).any():  # an undefined metric (e.g. recall without flipped labels) is not logged
      writer.add_scalar(key, float(np.nanmean(value)), record["epoch"])
  memorised = np.asarray(record["train_memorised_noisy_subset"], np.float64)  # NaN where nothing is noisy
  memorised = np.nanmean(memorised) if np.isfinite(memorised).any() else float("nan")
  line = (
    f"epoch {record['epoch']}: loss {np.mean(record['train_loss']):.4f} "
    f"test acc {np.mean(record['test_accuracy']):.4f} memorised {memorised:.3f}"
  )
  if bar is None:  # with a progress bar, its running loss/accuracy already show; keep the console short
    print(line)


# XLA:CPU runs ResNet-20's convolutions ~2.5x faster through Eigen than through YNNPACK (measured in
# docs/PERFORMANCE.md, train_step); the flag only concerns CPU convolutions. A user's own setting wins.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def set_cpu_xla_flags() -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS; effective only before JAX starts a backend (the CLIs call it first)."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_XLA_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags


def quiet_logs():
  """orbax logs every checkpoint step at INFO through absl; keep the console for our progress and results."""
  from absl import logging

  logging.set_verbosity(logging.WARNING)


def slurm_multi_task() -> bool:
  """Inside a SLURM job step with more than one task (srun -n N), where JAX can find its peers itself."""
  return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def init_distributed(config) -> None:
  """Multi-host: one process per host (or per GPU), before JAX touches a device.

  Called when `config.distributed` is set (e.g. on TPU pod slices, where jax.distributed.initialize() finds
  everything itself), when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and JAX_PROCESS_ID; any
  cluster), or inside a SLURM step with more than one task (JAX reads the SLURM_* variables). CPU processes use
  gloo collectives.
  """
  if not (config.distributed or "JAX_COORDINATOR_ADDRESS" in os.environ or slurm_multi_task()):
    return
  kwargs = {
    k: int(os.environ[v])
    for k, v in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
    if v in os.environ
  }
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def main(argv):
  del argv
  from absl import flags

  set_cpu_xla_flags()
  quiet_logs()
  enable_compilation_cache()
  config = flags.FLAGS.config
  init_distributed(config)
  try:
    train_and_evaluate(config, flags.FLAGS.workdir)
  except KeyboardInterrupt:
    sys.exit(130)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
