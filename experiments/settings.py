"""What a run's config means: the loss it builds, its noise settings, and every check that needs no
compiled code (run before anything is compiled, so a mistake fails in seconds)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import robust_losses
from experiments import data, models, noise, optimizers, splits

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
VAL_LABELS = ("noisy", "clean")  # what the held-out examples are scored against (config.val_labels)

# What the loop can give a loss from the noise model, by hyperparameter name (the loss-state protocol's
# inputs): Patrini et al.'s known-T setting uses the noise model's own expected transition matrix.
NOISE_INPUTS = ("transition_matrix", "noise_rate")


def loss_hparams(config) -> dict:
  """The hyperparameters set in `config.loss` (unset placeholders mean the loss's own default)."""
  return {k: v for k, v in config.loss.items() if k != "name" and v is not None}


def noise_settings(config, settings=None) -> list[dict]:
  """The noise settings of a run: config.noise alone, or several (a sweep row trained as one program)."""
  if not settings:
    return [{"kind": config.noise.kind, "rate": float(config.noise.rate)}]
  return [{"kind": n["kind"], "rate": float(n["rate"])} for n in settings]


def noise_matrix(config):
  return None if config.noise.matrix is None else np.asarray(config.noise.matrix)


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
      settings[0]["kind"],
      settings[0]["rate"],
      num_classes=num_classes,
      dataset=config.data.name,
      matrix=noise_matrix(config),
    )
  if "noise_rate" in needed:
    hparams["noise_rate"] = float(realised_rate)
  return robust_losses.get(config.loss.name, **hparams)


def noisy_labels(config, dataset, replicas) -> list[noise.NoisyLabels]:
  """One noise draw per replica (noise setting, seed) on the whole training set (before any validation split):
  each seed gets its own noisy labels; kind='file' gives replica r the file's row r (or its only row)."""
  return [
    noise.apply_noise(
      dataset.train.labels,
      kind=n["kind"],
      rate=n["rate"],
      num_classes=dataset.num_classes,
      seed=s,
      dataset=config.data.name,
      matrix=noise_matrix(config),
      real_labels=dataset.real_noisy_labels,
      path=config.noise.path or None,
      replica=r,
      num_replicas=len(replicas),
    )
    for r, (n, s) in enumerate(replicas)
  ]


def validation_split(config, dataset):
  """(train_idx, val_idx) of the `val_fraction` split of the training set, or None without one.

  The held-out examples are one set for the whole run and for every run of a sweep at the same `config.seed`:
  the split is stratified by the dataset's own training labels (the clean ones where the dataset has them; for
  data that has only noisy labels, those) and seeded by `config.seed` alone, never by the loss, the noise
  setting or a replica's noise draw. Why not stratify by each replica's noisy labels: the replicas of one
  program (seeds × noise settings) share one training set, and rows of a sweep that differ in the noise would
  then validate and train on different examples, so a difference between rows would mix the noise with the
  split. Stratification only balances the classes of the held-out set; which labels score it is `val_labels`
  ('noisy': each replica's own noisy labels of those examples). The split is a function of (labels, fraction,
  seed) on the host, so streamed and in-memory input, any number of devices or processes and a resumed run
  all get the same one (splits.validation_split).
  """
  if not config.val_fraction:
    return None
  return splits.validation_split(
    dataset.train.labels, float(config.val_fraction), seed=int(config.seed), num_classes=dataset.num_classes
  )


def hold_out(config, dataset, noisy, split):
  """Applies `split` to a run: (dataset with train/val, the training part of each replica's NoisyLabels, and
  the labels the held-out examples are scored against, int32 [R, n_val]).

  The noise was drawn on the whole training set first (`noisy`), so the held-out examples carry noisy labels of
  the same noise process as the ones trained on.
  """
  train_idx, val_idx = split
  held = data.hold_out(dataset, train_idx, val_idx)
  if config.val_labels == "clean":
    val_labels = np.tile(dataset.train.labels[val_idx].astype(np.int32), (len(noisy), 1))
  else:
    val_labels = np.stack([nl.labels[val_idx] for nl in noisy]).astype(np.int32)
  return held, [noise.subset(nl, train_idx) for nl in noisy], val_labels


def selection(config, dataset) -> dict | None:
  """summary.json's `selection` (how `selected_epoch` is chosen), or None for a run without validation."""
  if config.val_fraction:
    return {"val_fraction": float(config.val_fraction), "val_labels": config.val_labels, "ties": "earliest"}
  if dataset.val is not None:  # the dataset's own validation split (image files), with its labels
    return {"val_fraction": 0.0, "val_labels": "clean", "ties": "earliest", "val_split": "dataset"}
  return None


def write_noisy_labels(workdir, noisy, replicas) -> str:
  """Writes WORKDIR/noisy_labels.npz (every replica's labels on the whole training set), or, when a resumed run
  finds one, checks that it holds the labels this run trains on: a checkpoint belongs to its labels."""
  path = os.path.join(workdir, noise.NOISE_FILE)
  if not os.path.exists(path):
    return noise.save_noisy_labels(path, noisy, replicas)
  with np.load(path, allow_pickle=False) as f:
    old = {k: f[k] for k in ("noisy_labels", "is_noisy", "noise_kind", "seed") if k in f.files}
  new = {
    "noisy_labels": np.stack([nl.labels for nl in noisy]),
    "is_noisy": np.stack([nl.is_noisy for nl in noisy]),
    "noise_kind": np.asarray([n["kind"] for n, _ in replicas], dtype=str),
    "seed": np.asarray([s for _, s in replicas], dtype=np.int64),
  }
  differ = [k for k in new if k not in old or old[k].shape != new[k].shape or not np.array_equal(old[k], new[k])]
  if differ:
    raise ValueError(
      f"{path} holds other noisy labels than this run draws (arrays {differ} differ), and its checkpoints were "
      "trained on the file's. To continue on them, resume with --config.noise.kind=file "
      f"--config.noise.path=<a copy of {path}> in a new workdir; or set --config.overwrite=True to move the old "
      "run aside and start again"
    )
  return path


def file_noise_report(noisy, replicas) -> str:
  """What labels from a file amount to, per replica: realised rate and transition matrix vs the clean labels."""
  lines = []
  for nl, (setting, seed) in zip(noisy, replicas):
    if setting["kind"] != "file":
      continue
    T = np.array2string(nl.transition_realised, precision=3, suppress_small=True, max_line_width=200)
    lines.append(
      f"noise file, replica seed {seed}: realised rate {nl.rate_realised:.4f} ({int(nl.is_noisy.sum())} of "
      f"{nl.is_noisy.size} labels differ from the clean ones); realised transition matrix T[clean, noisy]:\n{T}"
    )
  return "\n".join(lines)


def num_devices(config) -> int:
  return config.num_devices or jax.device_count()


def loop_free(config, model) -> bool:
  """config.loop_free, or when unset (auto): on the CPU backend for convolutional models only (an MLP's
  steps run faster inside lax.scan; docs/PERFORMANCE.md)."""
  if config.loop_free is not None:
    return config.loop_free
  return jax.default_backend() == "cpu" and not isinstance(model, models.MLP)


def validate_static(config, settings=None) -> None:
  """Checks that need no data; run before anything is loaded or compiled."""
  data.validate(config.data)
  if config.init_from and not os.path.exists(config.init_from):
    raise ValueError(
      f"init_from={config.init_from!r}: no such file or directory (a workdir, checkpoint directory or flax "
      "msgpack file)"
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
  if any(n["kind"] == "file" for n in noise_settings(config, settings)):
    noise.check_noise_file(config.noise.path or None)  # exists, readable, integer labels >= 0
  elif config.noise.path:
    raise ValueError(f"noise.path={config.noise.path!r} is read only with noise.kind='file'; set one or the other")
  fraction = config.val_fraction
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
    raise ValueError(
      f"val_fraction={fraction!r} is out of range; valid range is [0, 1) (the share of the training set held out "
      "for validation; 0 = no split)"
    )
  if config.val_labels not in VAL_LABELS:
    raise ValueError(f"val_labels={config.val_labels!r} is unknown; valid choices: {list(VAL_LABELS)}")
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
    ("train_eval_max_examples", 0),
    ("label_audit_epochs", 0),
  ):
    if config[key] < low:
      raise ValueError(f"{key}={config[key]!r} is out of range; valid range is >= {low}")
  if not 0 <= config.num_devices <= jax.device_count():
    raise ValueError(
      f"num_devices={config.num_devices} is out of range; valid range is 0 (all) to {jax.device_count()}"
    )
  ndev = num_devices(config)
  if config.batch_size % ndev:
    raise ValueError(
      f"batch_size={config.batch_size} is not divisible by the device count {ndev}; use a multiple of {ndev}"
    )
  if config.data.input == "stream" and not config.steps_per_call:
    raise ValueError(
      "steps_per_call=0 runs a whole epoch per call, which would hold an epoch of decoded batches in host "
      "memory when streaming; set steps_per_call >= 1 (e.g. 10)"
    )
  if not 0 <= config.skip_nonfinite_max_share <= 1:
    raise ValueError(
      f"skip_nonfinite_max_share={config.skip_nonfinite_max_share!r} is out of range; valid range is [0, 1]"
    )
  optimizers.validate(config)
  # Hyperparameter ranges: the registry checks them at construction (placeholders for what the noise model
  # provides later), and the loss's schedules must act within the run.
  placeholders = {k: np.eye(2) if k == "transition_matrix" else 0.0 for k in noise_inputs(config)}
  robust_losses.get(config.loss.name, **loss_hparams(config), **placeholders).check_training(config.num_epochs)


def validate_with_data(config, dataset, settings: list[dict]) -> None:
  n = len(dataset.train)
  if config.val_fraction and dataset.val is not None:
    raise ValueError(
      f"val_fraction={config.val_fraction} would hold out a validation split, but {config.data.name!r} has its own "
      "(data.val_list or a val/ folder), which is used by itself; set val_fraction=0 to use it"
    )
  split = validation_split(config, dataset)  # raises when the fraction holds out no example
  if split is not None:
    n = len(split[0])
  if config.batch_size > n:
    raise ValueError(
      f"batch_size={config.batch_size} is larger than the training set ({n} examples"
      + (f" after holding out val_fraction={config.val_fraction})" if split is not None else ")")
    )
  for s in settings:
    noise.validate(
      s["kind"],
      s["rate"],
      num_classes=dataset.num_classes,
      dataset=config.data.name,
      matrix=noise_matrix(config),
      path=config.noise.path or None,
    )
  if any(s["kind"] == "file" for s in settings):
    num_replicas = len(settings) * config.num_seeds
    noise.check_noise_file(
      config.noise.path,
      num_examples=len(dataset.train),
      num_classes=dataset.num_classes,
      num_replicas=num_replicas,
      clean_labels=dataset.train.labels,
    )
  if any(s["kind"] == "real" for s in settings) and dataset.real_noisy_labels is None:
    raise ValueError(
      f"noise.kind='real' needs a dataset with human/web labels; {config.data.name!r} has none "
      "(use cifar10_n, cifar100_n or controlled_noisy_web_labels)"
    )
  views = build_loss(config, dataset.num_classes, settings).num_views
  if views > 1 and not (dataset.crop_pad or dataset.flip):
    raise ValueError(
      f"loss {config.loss.name!r} trains on {views} augmented views of each example, but data.augment="
      f"{config.data.augment!r} gives {config.data.name!r} no augmentation, so the views would be identical; "
      "set data.augment to one of 'crop', 'flip', 'crop_flip' (for digits: 'crop'; a flip changes a digit)"
    )
