"""The compiled parts of training: state, the data-parallel train chunk and the evaluation pass.

Everything here is written once for a stack of R *replicas* (independent runs that differ in seed and in
their noisy labels) and `jax.vmap`ped over that leading axis; a single run is R = 1. The per-device program
is the pmap model written with `jax.shard_map` over a 1-D mesh with axis ``batch``: every device holds the
(replicated) training set, gathers its own slice of each global batch, and gradients, BatchNorm statistics
and batch-statistics losses (dynamic clipping) are reduced over ``batch``. Data order, augmentation and
initialisation are derived from (seed, step) alone, so a resumed run replays exactly what an uninterrupted
run would have done, and the result does not depend on the number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import input_pipeline

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Per-replica training state; every leaf has a leading replica axis R."""

  step: jax.Array  # int32 [R], optimisation steps taken
  params: Any
  batch_stats: Any
  opt_state: Any
  # The loss's per-example state {key: [R, N, ...]} ({} for most losses): truncated-Lq weights, ELR
  # targets. Indexed by the example's position in the training set; replicated on every device.
  loss_state: Any


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicate(mesh, tree):
  """Puts host arrays on every device of `mesh` (also across processes: each passes the same data)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def replica_keys(seeds) -> jax.Array:
  return jnp.stack([jax.random.key(int(s)) for s in seeds])


def _stream(key, name: str):
  """Independent RNG streams (init, data order, augmentation) from one seed key."""
  return jax.random.fold_in(key, {"init": 0, "data": 1, "augment": 2}[name])


def epoch_permutation(key, epoch, num_train: int):
  """The order in which epoch `epoch` visits the training set: global batch t is positions [t·B, (t+1)·B).
  One definition for the in-memory step (on device) and the streamed input (on the host)."""
  return jax.random.permutation(jax.random.fold_in(_stream(key, "data"), epoch), num_train)


@functools.partial(jax.jit, static_argnums=2)
def _host_permutation(key, epoch, num_train):
  return epoch_permutation(key, epoch, num_train)


def host_epoch_order(seed: int, num_train: int):
  """epoch -> the epoch's permutation for seed `seed`, as numpy, computed on this host's CPU (every
  process computes the same one; threefry and the sort behind the permutation are exact)."""
  cpu = jax.local_devices(backend="cpu")[0]
  with jax.default_device(cpu):
    key = jax.random.key(int(seed))
  return lambda epoch: np.asarray(_host_permutation(key, jax.device_put(np.int32(epoch), cpu), num_train))


@dataclasses.dataclass(frozen=True)
class Program:
  """What the compiled programs depend on. Runs that share a Program (e.g. the noise settings of one
  sweep row) share compiled code, because the jitted functions are cached per Program."""

  model: Any  # flax.linen Module (hashable dataclass)
  loss_fn: Any  # robust_losses registry object
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  batch_size: int
  num_train: int
  steps_per_epoch: int
  eval_batch_size: int
  mean: tuple
  std: tuple
  augment_crop_pad: int
  augment_flip: bool
  skip_nonfinite: bool
  num_classes: int
  compute_dtype: Any = jnp.float32
  # One step (and one eval batch) per compiled call, with no XLA while loop: XLA:CPU runs convolutions
  # inside while loops ~20x slower (jax-ml/jax#12868; measured in docs/PERFORMANCE.md).
  loop_free: bool = False
  # Batches come from the host (experiments/streaming.py), sharded over the devices, instead of being
  # gathered on device from a replicated training set.
  streamed: bool = False
  # Only the classifier ('head') trains; the backbone runs in eval mode (BatchNorm statistics as loaded).
  freeze_backbone: bool = False

  def __hash__(self):  # optax transformations are not hashable; identity is what the cache needs
    return id(self)


def init_state(prog: Program, keys: jax.Array, input_shape) -> TrainState:
  """Initialises R replicas (one per key), replicated over the mesh."""
  loss_state = prog.loss_fn.init_example_state(prog.num_train, prog.num_classes)

  def one(key):
    variables = prog.model.init(_stream(key, "init"), jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=prog.tx.init(params),
      loss_state=jax.tree.map(jnp.asarray, loss_state),
    )

  out_sharding = NamedSharding(prog.mesh, P())
  return jax.jit(jax.vmap(one), out_shardings=out_sharding)(keys)


def _preprocess(prog: Program, images, key=None, positions=None):
  if key is not None and (prog.augment_crop_pad or prog.augment_flip):
    # One key per *global* example position, so augmentation is independent of the device count.
    aug = lambda k, im: input_pipeline.augment(k, im[None], crop_pad=prog.augment_crop_pad, flip=prog.augment_flip)[0]
    images = jax.vmap(aug)(jax.vmap(lambda p: jax.random.fold_in(key, p))(positions), images)
  return input_pipeline.normalize(images, prog.mean, prog.std, dtype=prog.compute_dtype)


def _all_finite(tree, group: int = 32) -> jax.Array:
  """Whether every element of every leaf is finite, from one reduction per `group` leaves of a dtype.

  A reduction per leaf (ResNet-50: 161 parameter arrays, checked for the gradients and the new parameters)
  made XLA:CPU compile ~900 more small kernels: its train step took 36 s to compile, 12 s with this
  (benchmarks/compile.py). XLA:CPU writes the concatenation out: a call is 1 % slower at batch 128, 5-13 % at
  batch 8. Groups bound that buffer.
  """
  by_dtype = {}
  for x in jax.tree.leaves(tree):
    by_dtype.setdefault(jnp.result_type(x), []).append(jnp.ravel(x))
  checks = [
    jnp.all(jnp.isfinite(jnp.concatenate(xs[i : i + group])))
    for xs in by_dtype.values()
    for i in range(0, len(xs), group)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


@functools.lru_cache(maxsize=None)
def train_chunk_fn(prog: Program) -> Callable:
  """Returns jit(f)(state, keys, labels, is_noisy, x_train, steps) -> (state, per-step metrics [R, T]).

  `steps` (int32 [T]) are the global step numbers to run; they must lie in one epoch. `labels` are the
  per-replica (noisy) training labels [R, N] and `is_noisy` (bool [R, N]) marks the ones the noise model
  flipped (only for diagnostics: how well a loss's clipped set finds them); `x_train` the uint8 images
  [N, H, W, C], replicated.

  With `prog.streamed` it is f(state, keys, labels, is_noisy, images, ids, steps) instead: the T global
  batches themselves, uint8 [T, B, H, W, C] and their training-set ids int32 [T, B], both sharded over the
  batch axis (each process supplies its devices' rows). All replicas then see the same batches.
  """
  ndev = prog.mesh.size
  local_bs = prog.batch_size // ndev
  loss_fn = prog.loss_fn

  def replica(state: TrainState, key, labels, is_noisy, x, ids, steps):
    perm = None if prog.streamed else epoch_permutation(key, steps[0] // prog.steps_per_epoch, prog.num_train)
    dev = jax.lax.axis_index(AXIS)

    def step_fn(state: TrainState, inputs):
      step, batch, batch_ids = inputs
      start = (step % prog.steps_per_epoch) * prog.batch_size + dev * local_bs
      if prog.streamed:
        idx, raw = batch_ids, batch
      else:
        idx = jax.lax.dynamic_slice(perm, (start,), (local_bs,))
        raw = x[idx]
      images = _preprocess(
        prog, raw, jax.random.fold_in(_stream(key, "augment"), step), positions=start + jnp.arange(local_bs)
      )
      rows = jax.tree.map(lambda a: a[idx], state.loss_state)

      def loss_of(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        if prog.freeze_backbone:  # a fixed feature extractor: eval-mode BatchNorm, statistics not updated
          logits, new_vars = prog.model.apply(variables, images, train=False), variables
        else:
          logits, new_vars = prog.model.apply(variables, images, train=True, mutable=["batch_stats"])
        # The loop names no loss: every loss gets the batch's state rows and the epoch, if it takes them.
        losses, aux = loss_fn.call_with_aux(
          logits, labels[idx], axis_name=AXIS, example_state=rows or None, epoch=step // prog.steps_per_epoch
        )
        return jnp.mean(losses), (logits, new_vars["batch_stats"], aux)

      # Local gradient of the local mean, then pmean: the pmap data-parallel model, made explicit.
      varying = jax.lax.pcast(state.params, AXIS, to="varying")
      (loss, (logits, batch_stats, aux)), grads = jax.value_and_grad(loss_of, has_aux=True)(varying)
      grads = jax.lax.pmean(grads, AXIS)
      loss = jax.lax.pmean(loss, AXIS)
      updates, opt_state = prog.tx.update(grads, state.opt_state, state.params)
      loss_state = state.loss_state
      if "example_state" in aux:
        # Every device updated its own rows: gather all of them so the replicated state stays identical
        # everywhere (and independent of the device count).
        gather = lambda x: jax.lax.all_gather(x, AXIS, tiled=True, to="invarying")
        all_idx = gather(idx)
        loss_state = jax.tree.map(
          lambda a, r: a.at[all_idx].set(gather(r).astype(a.dtype)), loss_state, aux["example_state"]
        )
      new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        loss_state=loss_state,
      )
      # A finite gradient times a huge learning rate can still overflow the parameters: check them too.
      finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new.params)
      # A non-finite step never reaches the state: with skip_nonfinite it is skipped and counted; otherwise
      # the host stops the run at the end of the chunk with the last good state intact.
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
      if not prog.skip_nonfinite:
        new = new.replace(step=jnp.where(finite, new.step, state.step))
      else:
        new = new.replace(step=state.step + 1)
      metrics = {
        "loss": loss,
        "accuracy": jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels[idx]), AXIS),
        "clipped": jax.lax.pmean(jnp.mean(aux.get("clipped", jnp.zeros(()))), AXIS),
        # Clipped examples whose label the noise model flipped, and flipped ones, per batch example.
        "clipped_noisy": jax.lax.pmean(jnp.mean(aux.get("clipped", 0.0) * is_noisy[idx]), AXIS),
        "noisy": jax.lax.pmean(jnp.mean(is_noisy[idx].astype(jnp.float32)), AXIS),
        "finite": finite,
      }
      return new, metrics

    xs = (steps, x, ids) if prog.streamed else (steps, None, None)
    # unroll=0 is a full unroll with no while loop (unroll=True on a length-1 scan still emits one).
    return jax.lax.scan(step_fn, state, xs, unroll=0 if prog.loop_free else 1)

  per_replica = jax.vmap(replica, in_axes=(0, 0, 0, 0, None, None, None))
  if prog.streamed:
    fn = jax.shard_map(
      per_replica, mesh=prog.mesh, out_specs=P(), in_specs=(P(), P(), P(), P(), P(None, AXIS), P(None, AXIS), P())
    )
  else:
    fn = jax.shard_map(
      lambda state, keys, labels, is_noisy, x, steps: per_replica(state, keys, labels, is_noisy, x, None, steps),
      mesh=prog.mesh,
      in_specs=(P(),) * 6,
      out_specs=P(),
    )
  return jax.jit(fn, donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def eval_fn(prog: Program, refresh: bool = False) -> Callable:
  """Returns jit(f)(state, x, labels) -> (predictions int32 [R, M], loss-state rows {key: [R, M, ...]}).

  `x` is a uint8 image set [M, H, W, C] padded so that M is a multiple of devices × eval batch. With
  `refresh`, the rows are the loss's `refresh(logits, labels)` (e.g. truncated-Lq weights w = 1[p_y > k])
  with the per-replica training labels [R, M]; otherwise they are {} and `labels` are unused.
  Each device evaluates a contiguous block; the blocks are gathered in order, so the (replicated) output
  keeps the input order and is readable on every process.
  """

  def replica(state: TrainState, x, labels):
    nb = x.shape[0] // prog.eval_batch_size
    xb = x.reshape(nb, prog.eval_batch_size, *x.shape[1:])
    yb = labels.reshape(nb, prog.eval_batch_size)

    def batch(_, inputs):
      images, y = inputs
      logits = prog.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, _preprocess(prog, images), train=False
      )
      rows = prog.loss_fn.refresh(logits, y) if refresh else {}
      return None, (jnp.argmax(logits, -1).astype(jnp.int32), rows)

    _, (pred, rows) = jax.lax.scan(batch, None, (xb, yb), unroll=0 if prog.loop_free else 1)
    return pred.reshape(-1), jax.tree.map(lambda r: r.reshape(-1, *r.shape[2:]), rows)

  def per_device(state, x, labels):
    out = jax.vmap(replica, in_axes=(0, None, 0))(state, x, labels)
    return jax.lax.all_gather(out, AXIS, axis=1, tiled=True)

  # all_gather's result is the same on every device, but the replication checker cannot infer that.
  fn = jax.shard_map(per_device, mesh=prog.mesh, in_specs=(P(), P(AXIS), P(None, AXIS)), out_specs=P(), check_vma=False)
  return jax.jit(fn)


def pad_for_eval(prog: Program, n: int) -> int:
  """Size that `n` examples are padded to for `eval_fn` (padding is dropped from the outputs)."""
  block = prog.mesh.size * prog.eval_batch_size
  return -(-n // block) * block


def pad(a: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, size - a.shape[axis])
  return np.pad(a, widths)
