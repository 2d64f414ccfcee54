"""The compiled parts of training: state, the data-parallel train step and the evaluation pass.

Everything here is written once for a stack of R *replicas* (independent runs that differ in seed and in
their noisy labels) and `jax.vmap`ped over that leading axis; a single run is R = 1. The per-device program
is the pmap model written with `jax.shard_map` over a 1-D mesh with axis ``batch``: each device receives its
slice of every global batch from the feed (experiments/data/feeds.py), and gradients, BatchNorm statistics
and batch-statistics losses (dynamic clipping) are reduced over ``batch``. Augmentation and initialisation
are derived from (seed, step) alone, so a resumed run replays exactly what an uninterrupted run would have
done, and the result does not depend on the number of devices. A loss that takes M > 1 augmented views of
each example (`Loss.num_views`, GJS) gets the logits of M independent augmentations of the batch, [M, b, K],
each view run through the model as a batch of its own; M = 1 traces exactly the single-view step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import data, rng
from experiments.mesh import AXIS


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
  # The loss's state across steps ({} for most losses; robust_losses.protocol.StepState): OGC's queue and
  # threshold, windowed clipping's LossWindow. Fixed size, updated from the global batch; replicated.
  step_state: Any = flax.struct.field(default_factory=dict)


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
  crop_pad: int
  flip: bool
  skip_nonfinite: bool
  num_classes: int
  compute_dtype: Any = jnp.float32
  # One step (and one eval batch) per compiled call, with no XLA while loop: XLA:CPU runs convolutions
  # inside while loops ~20x slower (jax-ml/jax#12868; measured in docs/PERFORMANCE.md).
  loop_free: bool = False
  # Whether every replica gets its own batches (a leading replica axis: the device-resident feed, where
  # each seed has its own data order) or all share them (the streamed feed).
  per_replica_batches: bool = True
  # Only the classifier ('head') trains; the backbone runs in eval mode (BatchNorm statistics as loaded).
  freeze_backbone: bool = False
  # optax schedule: step -> learning rate, passed to losses that take it (OGC's threshold target).
  learning_rate: Any = None

  def __hash__(self):  # optax transformations are not hashable; identity is what the cache needs
    return id(self)


def init_state(prog: Program, keys: jax.Array, input_shape) -> TrainState:
  """Initialises R replicas (one per key), replicated over the mesh."""
  loss_state = prog.loss_fn.init_example_state(prog.num_train, prog.num_classes)
  step_state = prog.loss_fn.init_step_state(prog.num_classes)

  def one(key):
    variables = prog.model.init(rng.stream(key, "init"), jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=prog.tx.init(params),
      loss_state=jax.tree.map(jnp.asarray, loss_state),
      step_state={} if step_state is None else step_state,
    )

  return jax.jit(jax.vmap(one), out_shardings=NamedSharding(prog.mesh, P()))(keys)


def _preprocess(prog: Program, images, key=None, positions=None, num_views: int = 1):
  """Normalised images [b, ...], or with `num_views` M > 1 (training only) M augmented views [M, b, ...]."""
  if key is not None and (prog.crop_pad or prog.flip or num_views > 1):
    # One key per *global* example position, so augmentation is independent of the device count.
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
    if num_views == 1:
      images = data.augment_batch(keys, images, crop_pad=prog.crop_pad, flip=prog.flip)
    else:  # view 0 is the single-view augmentation; view v folds v into each example's key
      images = data.augment_views(keys, images, num_views=num_views, crop_pad=prog.crop_pad, flip=prog.flip)
  return data.normalize(images, prog.mean, prog.std, dtype=prog.compute_dtype)


def _all_finite(tree, group: int = 32) -> jax.Array:
  """Whether every element of every leaf is finite, from one reduction per `group` leaves of a dtype.

  A reduction per leaf (ResNet-50: 161 parameter arrays, checked for the gradients and the new parameters)
  made XLA:CPU compile ~900 more small kernels; concatenating bounds that (benchmarks/compile.py measures
  compile and run time; docs/PERFORMANCE.md). Groups bound the concatenated buffer.
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


def train_step(prog: Program, state: TrainState, key, labels, is_noisy, batch, step):
  """One optimisation step of one replica on this device's slice of a global batch.

  `labels` (int32 [N]) are the replica's training labels and `is_noisy` (bool [N]) marks those its noise
  model flipped; `batch` is {"images": uint8 [b, H, W, C], "ids": int32 [b]} (b = batch / devices), `step`
  the global step number. Returns (new state, {metric: scalar over the global batch, 'finite': bool}).
  With M = `prog.loss_fn.num_views` > 1 the loss receives logits [M, b, K] and the training accuracy is
  that of the first view.
  """
  ids = batch["ids"]
  local_bs = ids.shape[0]
  start = (step % prog.steps_per_epoch) * prog.batch_size + jax.lax.axis_index(AXIS) * local_bs
  # M augmented views of each example when the loss takes them (GJS), else one: [M, b, ...] or [b, ...].
  num_views = prog.loss_fn.num_views
  images = _preprocess(
    prog,
    batch["images"],
    jax.random.fold_in(rng.stream(key, "augment"), step),
    start + jnp.arange(local_bs),
    num_views=num_views,
  )
  y, flipped = labels[ids], is_noisy[ids]
  rows = jax.tree.map(lambda a: a[ids], state.loss_state)

  def forward(params, batch_stats, images):
    variables = {"params": params, "batch_stats": batch_stats}
    if prog.freeze_backbone:  # a fixed feature extractor: eval-mode BatchNorm, statistics not updated
      return prog.model.apply(variables, images, train=False), batch_stats
    logits, new_vars = prog.model.apply(variables, images, train=True, mutable=["batch_stats"])
    return logits, new_vars["batch_stats"]

  def loss_of(params):
    if num_views == 1:
      logits, batch_stats = forward(params, state.batch_stats, images)
    else:
      # Each view is a batch of its own, as in the official GJS code: BatchNorm normalises each view by
      # its own (global) batch statistics, and the running statistics take one update per view.
      batch_stats, views = state.batch_stats, []
      for v in range(num_views):
        view_logits, batch_stats = forward(params, batch_stats, images[v])
        views.append(view_logits)
      logits = jnp.stack(views)  # [M, b, K]
    # The loop names no loss: every loss gets the batch's state rows, the epoch, its step state and the
    # learning rate of this step, if it takes them.
    losses, aux = prog.loss_fn.call_with_aux(
      logits,
      y,
      axis_name=AXIS,
      example_state=rows or None,
      epoch=step // prog.steps_per_epoch,
      step_state=state.step_state if prog.loss_fn.uses_step_state else None,
      learning_rate=None if prog.learning_rate is None else prog.learning_rate(step),
    )
    return jnp.mean(losses), (logits, batch_stats, aux)

  # Local gradient of the local mean, then pmean: the pmap data-parallel model, made explicit.
  varying = jax.lax.pcast(state.params, AXIS, to="varying")
  (loss, (logits, batch_stats, aux)), grads = jax.value_and_grad(loss_of, has_aux=True)(varying)
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = prog.tx.update(grads, state.opt_state, state.params)
  loss_state = state.loss_state
  if "example_state" in aux:
    # Every device updated its own rows: gather all of them so the replicated state stays identical
    # everywhere (and independent of the device count).
    gather = lambda x: jax.lax.all_gather(x, AXIS, tiled=True, to="invarying")
    all_ids = gather(ids)
    loss_state = jax.tree.map(
      lambda a, r: a.at[all_ids].set(gather(r).astype(a.dtype)), loss_state, aux["example_state"]
    )
  new = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
    loss_state=loss_state,
    step_state=aux.get("step_state", state.step_state),  # computed from the global batch: replicated
  )
  loss = jax.lax.pmean(loss, AXIS)
  # A finite gradient times a huge learning rate can still overflow the parameters: check them too.
  finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new.params)
  # A non-finite step never reaches the state: with skip_nonfinite it is skipped and counted; otherwise
  # the host stops the run at the end of the chunk with the last good state intact.
  new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
  new = new.replace(step=state.step + 1 if prog.skip_nonfinite else jnp.where(finite, new.step, state.step))
  if num_views > 1:
    logits = logits[0]  # training accuracy from the first view (the single-view augmentation)
  clipped = aux.get("clipped", jnp.zeros(y.shape))
  mean = lambda x: jax.lax.pmean(jnp.mean(jnp.asarray(x, jnp.float32)), AXIS)
  # The per-step metrics, declared here only: the loop averages each over an epoch's finite steps
  # (records.EpochMetrics). The flipped mask measures how well a loss's clipped set finds the labels the
  # noise model flipped; it is used for nothing else.
  metrics = {
    "train_loss": loss,
    "train_accuracy_noisy_labels": mean(jnp.argmax(logits, -1) == y),  # against the labels trained on
    "clipped_fraction": mean(clipped),  # share of the batch the loss clipped (dynamic clipping), else 0
    "clipped_noisy_fraction": mean(clipped * flipped),  # share both clipped and flipped by the noise model
    "noisy_fraction": mean(flipped),  # share whose label the noise model flipped
  }
  return new, {**metrics, "finite": finite}


@functools.lru_cache(maxsize=None)
def train_chunk_fn(prog: Program) -> Callable:
  """Returns jit(f)(state, keys, labels, is_noisy, batch, steps) -> (state, per-step metrics {name: [R, T]}).

  `steps` (int32 [T]) are the global step numbers to run, within one epoch; `batch` holds their T global
  batches from the feed: {"images": uint8 [R, T, B, H, W, C], "ids": int32 [R, T, B]}, sharded over B
  (without the leading R when `prog.per_replica_batches` is False: shared by all replicas). `labels` (int32
  [R, N]) and `is_noisy` (bool [R, N]) are each replica's training labels and flipped mask, replicated.
  """

  def replica(state, key, labels, is_noisy, batch, steps):
    def one_step(state, inputs):
      step, step_batch = inputs
      return train_step(prog, state, key, labels, is_noisy, step_batch, step)

    # unroll=0 is a full unroll with no while loop (unroll=True on a length-1 scan still emits one).
    return jax.lax.scan(one_step, state, (steps, batch), unroll=0 if prog.loop_free else 1)

  batch_axis = 0 if prog.per_replica_batches else None
  batch_spec = P(None, None, AXIS) if prog.per_replica_batches else P(None, AXIS)
  per_replica = jax.vmap(replica, in_axes=(0, 0, 0, 0, batch_axis, None))
  fn = jax.shard_map(
    per_replica,
    mesh=prog.mesh,
    in_specs=(P(), P(), P(), P(), {"images": batch_spec, "ids": batch_spec}, P()),
    out_specs=P(),
  )
  return jax.jit(fn, donate_argnums=(0,))


def _eval_pass(prog: Program, per_batch: Callable, gather: bool) -> Callable:
  """Returns jit(f)(state, x, labels) -> per_batch's outputs for every example, each leaf [R, M, ...].

  The evaluation pass shared by `eval_fn` and `label_scores_fn`: `x` (uint8 [M, H, W, C], M a multiple of
  devices × eval batch) is split into contiguous per-device blocks and scanned in eval batches through the
  model in eval mode, per replica; `per_batch(logits, labels)` maps one eval batch's logits (compute dtype)
  and labels int32 [b] to a pytree of [b, ...] arrays. With `gather` the blocks are gathered in order, so
  the output is replicated; otherwise it stays sharded over M.
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
      return None, per_batch(logits, y)

    _, out = jax.lax.scan(batch, None, (xb, yb), unroll=0 if prog.loop_free else 1)
    return jax.tree.map(lambda r: r.reshape(-1, *r.shape[2:]), out)

  per_replica = jax.vmap(replica, in_axes=(0, None, 0))
  in_specs = (P(), P(AXIS), P(None, AXIS))
  if not gather:
    return jax.jit(jax.shard_map(per_replica, mesh=prog.mesh, in_specs=in_specs, out_specs=P(None, AXIS)))

  def per_device(state, x, labels):
    return jax.lax.all_gather(per_replica(state, x, labels), AXIS, axis=1, tiled=True)

  # all_gather's result is the same on every device, but the replication checker cannot infer that.
  return jax.jit(jax.shard_map(per_device, mesh=prog.mesh, in_specs=in_specs, out_specs=P(), check_vma=False))


@functools.lru_cache(maxsize=None)
def eval_fn(prog: Program, refresh: bool = False) -> Callable:
  """Returns jit(f)(state, x, labels) -> (predictions int32 [R, M], loss-state rows {key: [R, M, ...]}).

  `x` is a uint8 image set [M, H, W, C] padded so that M is a multiple of devices × eval batch. With
  `refresh`, the rows are the loss's `refresh(logits, labels)` (e.g. truncated-Lq weights w = 1[p_y > k])
  with the per-replica training labels [R, M]; otherwise they are {} and `labels` are unused.
  Each device evaluates a contiguous block; the blocks are gathered in order, so the (replicated) output
  keeps the input order and is readable on every process.
  """

  def per_batch(logits, y):
    rows = prog.loss_fn.refresh(logits, y) if refresh else {}
    return jnp.argmax(logits, -1).astype(jnp.int32), rows

  return _eval_pass(prog, per_batch, gather=True)


@functools.lru_cache(maxsize=None)
def label_scores_fn(prog: Program) -> Callable:
  """Returns jit(f)(state, x, labels) -> (predictions int32 [R, M], CE of the given label float32 [R, M]).

  The label audit's pass (experiments/audit.py): eval mode, the per-replica training labels [R, M], laid out
  as in `eval_fn`; the outputs are sharded over M (each device's contiguous block), not replicated.
  """

  def per_batch(logits, y):
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.argmax(logits, -1).astype(jnp.int32), ce

  # No collective: each device's block stays on it and the host assembles the output (a cross-device gather
  # here waited on the slowest device and hit XLA:CPU's 40 s rendezvous limit on an overloaded host).
  return _eval_pass(prog, per_batch, gather=False)
