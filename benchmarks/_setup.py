"""Builds the project's compiled train chunk (train_lib.Program + train_chunk_fn) for the benchmarks.

`resnet_chunk` trains ResNet-20 on random uint8 32×32×3 data (CIFAR-shaped, with the CIFAR augmentation);
`digits_chunk` builds the embedded default (configs/digits.py) exactly as train.train_and_evaluate does.
Both return a `Chunk`: the AOT-compiled executable, its arguments, and compile seconds, so that timing a
call never includes compilation.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import data, rng, train_lib
from experiments.mesh import AXIS, make_mesh, replicate


@dataclasses.dataclass
class Chunk:
  prog: train_lib.Program
  compiled: object  # jax.stages.Compiled of train_chunk_fn(prog)
  args: list  # [state, keys, labels, is_noisy, batch, steps]; state and batch are replaced every call
  compile_seconds: float
  flops: float  # XLA cost analysis of the whole compiled chunk (see train_step.py)
  steps: int
  images_per_call: int
  feed: object  # the device-resident feed: each call gathers its batches first, as train.py does

  def __call__(self):
    """Gathers the call's batches and runs one chunk (donating and replacing the state); waits for both."""
    self.feed.start_epoch(0)
    self.args[4] = self.feed.next(self.steps)
    state, metrics = self.compiled(*self.args)
    self.args[0] = state
    jax.block_until_ready((state, metrics))
    return metrics


def _compile(prog, args):
  fn = train_lib.train_chunk_fn(prog)
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  seconds = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float((cost or {}).get("flops", float("nan")))


def _put(prog, seeds, labels, x, steps):
  """Replicated keys and labels, and the device-resident feed of images `x` with its first call's batches."""
  keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(rng.replica_keys(seeds))))
  feed = data.feeds.DeviceFeed(prog.mesh, x, keys, prog.batch_size)
  feed.start_epoch(0)
  return keys, replicate(prog.mesh, labels), feed, feed.next(steps)


def resnet_chunk(
  *, batch_size=128, steps=10, dtype="float32", num_devices=1, num_seeds=1, loop_free=False, model="resnet20"
) -> Chunk:
  import optax

  import robust_losses
  from experiments import models

  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  devices = jax.devices()[:num_devices]
  net = models.create(model, num_classes=10, input_shape=(32, 32, 3), axis_name=AXIS, dtype=dt)
  n = batch_size * steps  # one epoch = one chunk
  prog = train_lib.Program(
    model=net,
    loss_fn=robust_losses.get("softmax_cross_entropy"),
    tx=optax.sgd(0.1, momentum=0.9),
    mesh=make_mesh(devices),
    batch_size=batch_size,
    num_train=n,
    steps_per_epoch=steps,
    eval_batch_size=batch_size,
    mean=(0.49, 0.48, 0.45),
    std=(0.25, 0.24, 0.26),
    crop_pad=4,
    flip=True,
    skip_nonfinite=False,
    num_classes=10,
    compute_dtype=dt,
    loop_free=loop_free,
  )
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (num_seeds, n)).astype(np.int32)
  seeds = list(range(num_seeds))
  keys, labels, feed, batch = _put(prog, seeds, labels, x, steps)
  state = train_lib.init_state(prog, keys, (32, 32, 3))
  args = [state, keys, labels, jnp.zeros_like(labels, bool), batch, jnp.arange(steps, dtype=jnp.int32)]
  compiled, seconds, flops = _compile(prog, args)
  return Chunk(prog, compiled, args, seconds, flops, steps, batch_size * steps * num_seeds, feed)


def digits_config(**overrides):
  from configs import digits

  c = digits.get_config()
  c.progress = False
  for k, v in overrides.items():
    c[k] = v
  return c


def digits_chunk(*, num_seeds=1, num_devices=1, steps=None, loop_free=False, config=None) -> Chunk:
  """The digits default's train chunk, built by train.make_program; `steps` defaults to one epoch."""
  from experiments import settings as run_settings
  from experiments import train

  config = config or digits_config(num_seeds=num_seeds, num_devices=num_devices)
  config.loop_free = bool(loop_free)  # the MLP's default (auto) on CPU is lax.scan
  ds = data.load(config.data)
  settings = run_settings.noise_settings(config)
  prog = train.make_program(config, ds, run_settings.build_loss(config, ds.num_classes, settings))
  replicas = [(n, config.seed + i) for n in settings for i in range(config.num_seeds)]
  noisy = run_settings.noisy_labels(config, ds, replicas)
  steps = steps or prog.steps_per_epoch
  keys, labels, feed, batch = _put(
    prog, [s for _, s in replicas], np.stack([nl.labels for nl in noisy]), ds.train.source.images, steps
  )
  state = train_lib.init_state(prog, keys, ds.image_shape)
  is_noisy = replicate(prog.mesh, np.stack([nl.is_noisy for nl in noisy]))
  args = [state, keys, labels, is_noisy, batch, jnp.arange(steps, dtype=jnp.int32)]
  compiled, seconds, flops = _compile(prog, args)
  return Chunk(prog, compiled, args, seconds, flops, steps, prog.batch_size * steps * config.num_seeds, feed)
