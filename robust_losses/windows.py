r"""Windows of recent per-example losses over the global batch: optax-style ``init``/``update`` pairs.

A batch statistic that looks for the noisy mode of the loss distribution (the ``gmm`` of dynamic clipping,
OGC's two-component mixture) sees 64-128 losses per mini-batch: a noisy sample. A window keeps the last
:math:`W` per-example losses of the global batch (several steps' worth) in a ring buffer of fixed shape, so
the statistic can be computed from more losses, at the cost of losses up to a few steps old.

Two layouts, chosen at ``init``:

* pooled, ``losses [W]``: the last :math:`W` valid losses, whatever their label;
* per labelled class, ``losses [C, W]``: row :math:`c` holds the last :math:`W` losses of examples
  *labelled* :math:`c`, for a statistic computed per class (pair-flip and asymmetric noise move a share of
  class :math:`j`'s examples to one other label, so a per-class statistic compares them with their own label's
  clean examples; docs/RESULTS.md measures what that and a window change).

The state is a :class:`LossWindow` NamedTuple of arrays (a pytree of fixed shapes: jittable and
checkpointable). ``update`` appends the valid entries of the *global* batch in batch order (gathered over
``axis_name`` inside ``shard_map``/``pmap``), so the window is identical on every device and equal to what one
device holding the whole batch builds. The appended losses carry no gradient.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_losses import _utils


class LossWindow(NamedTuple):
  """Ring buffer(s) of the last ``size`` per-example losses (see :func:`loss_window_init`).

  Attributes:
    losses: float32 ``[W]`` (pooled) or ``[C, W]`` (per labelled class); slots ``>= count`` are unused.
    count: int32 ``[]`` or ``[C]``: filled slots, at most :math:`W`.
    position: int32 ``[]`` or ``[C]``: the slot the next loss is written to (the oldest once full).
  """

  losses: jax.Array
  count: jax.Array
  position: jax.Array

  @property
  def size(self) -> int:
    """:math:`W`, the capacity of the (each) ring."""
    return self.losses.shape[-1]

  @property
  def per_class(self) -> bool:
    """Whether the window keeps one ring per labelled class."""
    return self.losses.ndim == 2

  def valid(self) -> jax.Array:
    """bool mask of the filled slots, the shape of ``losses``: the window fills slots 0, 1, ... in order and
    only overwrites once full, so the filled slots are the first ``count``."""
    return jnp.arange(self.size) < self.count[..., None]


def loss_window_init(size: int, num_classes: Optional[int] = None) -> LossWindow:
  r"""An empty window of the last ``size`` losses (pooled), or of ``size`` losses per class.

  Args:
    size: :math:`W`, the number of losses kept (per class with ``num_classes``), >= 1.
    num_classes: None for one pooled window; :math:`C` for one window per labelled class (``[C, W]``).

  Returns:
    A :class:`LossWindow` of zeros (``count`` 0).

  References:
    Hurtik, Tomasiello, Hula & Hynar, Binary cross-entropy with dynamical clipping, Neural Computing &
    Applications 34(14), 12029-12041, 2022 (clipping by a statistic of the losses); a window of the last
    losses is this library's variant and OGC's queue (Ye et al., AAAI 2025) (docs/RESULTS.md).

  Examples:
    >>> import robust_losses as rl
    >>> window = rl.loss_window_init(4)
    >>> print(window.losses.shape, int(window.count))
    (4,) 0
    >>> rl.loss_window_init(4, num_classes=3).losses.shape
    (3, 4)
  """
  _utils.check_int("size", size, 1)
  if num_classes is None:
    return LossWindow(jnp.zeros((size,), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
  _utils.check_int("num_classes", num_classes, 1)
  zeros = jnp.zeros((num_classes,), jnp.int32)
  return LossWindow(jnp.zeros((num_classes, size), jnp.float32), zeros, zeros)


def global_batch(x, axis_name) -> jax.Array:
  """``x`` flattened and gathered over ``axis_name`` in device order (the global batch), replicated."""
  x = jnp.reshape(x, (-1,))
  if axis_name is not None:
    # 'invarying': every device holds the same gathered batch, so what is computed from it is replicated.
    x = jax.lax.all_gather(x, axis_name, tiled=True, to="invarying")
  return _utils.replicated(x)


def class_ids(labels, shape) -> jax.Array:
  """The labelled class of each example as int32 ``shape``: class ids pass through (negative ones too),
  one-hot/soft labels ``shape + (K,)`` give their argmax (the largest weight, e.g. under label smoothing)."""
  labels = jnp.asarray(labels)
  if labels.shape == tuple(shape):
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(
        f"labels of shape {labels.shape} (the shape of the losses) are read as class ids and must have an "
        f"integer dtype; got {labels.dtype}"
      )
    return labels.astype(jnp.int32)
  if labels.shape[:-1] == tuple(shape) and labels.ndim == len(shape) + 1:
    return jnp.argmax(labels, axis=-1).astype(jnp.int32)
  raise ValueError(
    f"labels must be class ids of the losses' shape {tuple(shape)} or one-hot/soft labels of shape "
    f"{tuple(shape)} + (K,); got {labels.shape}"
  )


def _check_classes(labels, ids, num_classes):
  labels = jnp.asarray(labels)
  if labels.shape != ids.shape and labels.shape[-1] != num_classes:
    raise ValueError(f"labels have {labels.shape[-1]} classes but the window keeps {num_classes}")
  if _utils.is_concrete(ids) and ids.size and int(jnp.max(ids)) >= num_classes:
    raise ValueError(
      f"class id {int(jnp.max(ids))} is out of range for a window of {num_classes} classes; valid range is "
      f"[0, {num_classes - 1}] (negative ids mark ignored examples)"
    )


def _push(buffer, count, position, values, keep):
  """Appends values[keep] (in order) to a ring of W slots; only the last W of them if there are more."""
  size = buffer.shape[-1]
  keep_int = keep.astype(jnp.int32)
  n = jnp.sum(keep_int)
  rank = jnp.cumsum(keep_int) - 1
  written = keep & (rank >= n - size)
  slot = jnp.where(written, (position + rank) % size, size)  # slot `size` is out of range: dropped
  buffer = buffer.at[slot].set(values, mode="drop")
  return buffer, jnp.minimum(count + n, size), (position + n) % size


def _push_per_class(buffer, count, position, values, keep, ids):
  """`_push` into row ids[i] of a [C, W] ring for each kept entry i (ids outside [0, C) are dropped)."""
  num_classes, size = buffer.shape
  keep = keep & (ids >= 0) & (ids < num_classes)
  member = (ids[:, None] == jnp.arange(num_classes)) & keep[:, None]  # [N, C]
  n = jnp.sum(member, axis=0, dtype=jnp.int32)
  ids = jnp.clip(ids, 0, num_classes - 1)
  rank = _utils.at_label(jnp.cumsum(member, axis=0, dtype=jnp.int32), ids) - 1
  written = keep & (rank >= n[ids] - size)
  slot = jnp.where(written, (position[ids] + rank) % size, size)
  buffer = buffer.at[ids, slot].set(values, mode="drop")
  return buffer, jnp.minimum(count + n, size), (position + n) % size


def loss_window_update(
  window: LossWindow,
  losses: jax.typing.ArrayLike,
  *,
  labels: Optional[jax.typing.ArrayLike] = None,
  where: Optional[jax.typing.ArrayLike] = None,
  axis_name=None,
) -> LossWindow:
  r"""Appends the valid per-example losses of the global batch to the window (oldest out first).

  Entries are appended in global batch order (device by device along ``axis_name``, then row-major); if a
  batch holds more valid entries than a ring has slots, only its last :math:`W` are kept. Excluded: entries
  with ``where`` False and examples whose class id is negative (ignored examples). The losses are taken
  behind ``stop_gradient``.

  Args:
    window: the state from :func:`loss_window_init` or a previous update.
    losses: per-example losses, any shape ``[...]``.
    labels: class ids ``[...]`` or one-hot/soft labels ``[..., C]`` (the labelled class is the argmax).
      Required for a per-class window; optional for a pooled one (negative ids are then left out).
    where: optional bool broadcastable to ``losses.shape``; False entries are not appended.
    axis_name: the mapped data-parallel axis inside ``shard_map``/``pmap`` (the window then holds the global
      batch and is replicated), or None.

  Returns:
    The new :class:`LossWindow` (same shapes).

  References:
    Hurtik, Tomasiello, Hula & Hynar, Binary cross-entropy with dynamical clipping, Neural Computing &
    Applications 34(14), 12029-12041, 2022 (clipping by a statistic of the losses); a window of the last
    losses is this library's variant and OGC's queue (Ye et al., AAAI 2025) (docs/RESULTS.md).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> window = rl.loss_window_init(4)
    >>> window = rl.loss_window_update(window, jnp.array([0.1, 0.2, 0.3]))
    >>> window = rl.loss_window_update(window, jnp.array([0.4, 0.5]))  # 0.5 overwrites the oldest, 0.1
    >>> print(window.losses, int(window.count), int(window.position))
    [0.5 0.2 0.3 0.4] 4 1
    >>> per_class = rl.loss_window_update(
    ...   rl.loss_window_init(2, num_classes=2), jnp.array([0.1, 0.9, 0.2, 0.3]), labels=jnp.array([0, 1, 0, 0])
    ... )
    >>> print(per_class.losses, per_class.count)
    [[0.3 0.2]
     [0.9 0. ]] [2 1]
  """
  values = jax.lax.stop_gradient(_utils.as_float(losses)).astype(window.losses.dtype)
  keep = jnp.ones(values.shape, bool) if where is None else jnp.broadcast_to(jnp.asarray(where, bool), values.shape)
  if window.per_class and labels is None:
    raise ValueError(
      f"a per-class window (losses of shape {window.losses.shape}) needs the labels of the batch; got labels=None"
    )
  ids = None
  if labels is not None:
    ids = class_ids(labels, values.shape)
    keep = keep & (ids >= 0)
  values, keep = global_batch(values, axis_name), global_batch(keep, axis_name)
  if not window.per_class:
    return LossWindow(*_push(window.losses, window.count, window.position, values, keep))
  _check_classes(labels, ids, window.losses.shape[0])
  ids = global_batch(ids, axis_name)
  return LossWindow(*_push_per_class(window.losses, window.count, window.position, values, keep, ids))
