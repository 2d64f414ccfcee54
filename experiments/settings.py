"""What a run's config means: the loss it builds, its noise settings, and every check that needs no
compiled code (run before anything is compiled, so a mistake fails in seconds)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import robust_losses
from experiments import data, models, noise, optimizers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

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
  """One noise draw per replica (noise setting, seed): each seed gets its own noisy labels."""
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
    )
    for n, s in replicas
  ]


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
  optimizers.validate(config)
  # Hyperparameter ranges: the registry checks them at construction (placeholders for what the noise model
  # provides later), and the loss's schedules must act within the run.
  placeholders = {k: np.eye(2) if k == "transition_matrix" else 0.0 for k in noise_inputs(config)}
  robust_losses.get(config.loss.name, **loss_hparams(config), **placeholders).check_training(config.num_epochs)


def validate_with_data(config, dataset, settings: list[dict]) -> None:
  n = len(dataset.train)
  if config.batch_size > n:
    raise ValueError(f"batch_size={config.batch_size} is larger than the training set ({n} examples)")
  for s in settings:
    noise.validate(
      s["kind"], s["rate"], num_classes=dataset.num_classes, dataset=config.data.name, matrix=noise_matrix(config)
    )
  if any(s["kind"] == "real" for s in settings) and dataset.real_noisy_labels is None:
    raise ValueError(
      f"noise.kind='real' needs a dataset with human/web labels; {config.data.name!r} has none "
      "(use cifar10_n, cifar100_n or controlled_noisy_web_labels)"
    )
  build_loss(config, dataset.num_classes, settings)
