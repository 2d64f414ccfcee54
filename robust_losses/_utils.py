"""Helpers shared by every loss: dtype handling, per-example masking and hyperparameter checks."""

import math
from typing import Any, Callable, Hashable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

# A mapped axis name (shard_map, pmap, vmap), or a tuple of them.
AxisName = Hashable


def as_float(x) -> jax.Array:
  """Casts to at least float32, so bf16/fp16 logits are computed in float32 (float64 stays float64)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def is_concrete(value) -> bool:
  """True for Python/NumPy numbers and concrete arrays; False for tracers (values only known at run time)."""
  return not isinstance(value, jax.core.Tracer)


def _fmt_range(lo, hi, lo_open, hi_open) -> str:
  left = "(" if lo_open or lo == -math.inf else "["
  right = ")" if hi_open or hi == math.inf else "]"
  return f"{left}{lo:g}, {hi:g}{right}"


def _is_real_number(value) -> bool:
  """A real scalar that is not a bool or string (a Python/NumPy number or a 0-d real array)."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    return False
  if isinstance(value, (int, float, np.integer, np.floating)):
    return True
  dtype = getattr(value, "dtype", None)
  return dtype is not None and np.ndim(value) == 0 and jnp.issubdtype(dtype, jnp.number) and not jnp.iscomplexobj(value)


def check_range(
  name: str, value, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False
) -> None:
  """Raises ValueError if a concrete scalar hyperparameter lies outside [lo, hi] (ends open if asked), and
  TypeError if it is not a real number (a string, a bool, an array of several values, ...).

  Traced values are skipped: the check is a Python-level guard, and skipping tracers keeps the losses
  jittable with hyperparameters passed as traced arguments.
  """
  if not is_concrete(value):
    return
  if not _is_real_number(value):
    raise TypeError(
      f"{name}={value!r} must be a real number (float); got {type(value).__name__}; valid range is "
      f"{_fmt_range(lo, hi, lo_open, hi_open)}"
    )
  v = float(value)
  below = v <= lo if lo_open else v < lo
  above = v >= hi if hi_open else v > hi
  if math.isnan(v) or below or above:
    raise ValueError(f"{name}={value!r} is out of range; valid range is {_fmt_range(lo, hi, lo_open, hi_open)}")


def check_int(name: str, value, lo: int) -> None:
  """Raises ValueError unless `value` is a Python/NumPy integer >= lo (used for static loop counts)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name}={value!r} must be a Python int; valid range is integers >= {lo}")
  if value < lo:
    raise ValueError(f"{name}={value!r} is out of range; valid range is integers >= {lo}")


def check_choice(name: str, value, choices: Sequence[str]) -> None:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name}={value!r} is not a valid choice; valid choices are {sorted(choices)}")


def check_bool(name: str, value) -> None:
  """Raises TypeError unless `value` is a bool (a flag that selects code, so it must be known in Python)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}={value!r} must be a bool (True or False); got {type(value).__name__}")


def per_example_mask(where, logits_shape) -> Optional[jax.Array]:
  """`where` as a bool array of shape logits_shape[:-1] (None stays None), or a ValueError naming the shapes."""
  if where is None:
    return None
  batch = tuple(logits_shape[:-1])
  shape = np.shape(where)
  try:
    broadcast = np.broadcast_shapes(shape, batch)
  except ValueError:
    broadcast = None
  if broadcast != batch:
    per_class = " (it has the shape of logits: optax's per-class mask)" if shape == tuple(logits_shape) else ""
    raise ValueError(
      f"where must be a per-example mask broadcastable to logits.shape[:-1] = {batch}, not optax's per-class "
      f"mask; got shape {shape}{per_class}. False marks an example to ignore (loss 0, zero gradient)"
    )
  return jnp.broadcast_to(jnp.asarray(where, bool), batch)


def class_id_mask(labels, num_classes: int, where) -> tuple[Optional[jax.Array], Optional[jax.Array]]:
  """(where, too_big) for int class ids [...]: negative ids join `where` as ignored examples; an id >= K is a
  ValueError when the ids are concrete (eager calls), and marked in `too_big` (bool [...]) when traced, where no
  error can be raised (its loss is made NaN). Either may be None (nothing to mask / nothing to mark)."""
  if is_concrete(labels):
    ids = np.asarray(labels)
    too_big = ids >= num_classes
    if too_big.any():
      index = tuple(int(i) for i in np.argwhere(too_big)[0])
      raise ValueError(
        f"labels{list(index)}={int(ids[index])} is out of range for logits with K={num_classes} classes; valid "
        f"class ids are 0 to {num_classes - 1}, and a negative id marks an example to ignore"
      )
    if not (ids < 0).any():
      return where, None
    valid = jnp.asarray(ids >= 0)
    return (valid if where is None else where & valid), None
  valid = labels >= 0
  return (valid if where is None else where & valid), labels >= num_classes


def prepare(logits, labels, where) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """Casts logits to float, checks the label form and `where`, and neutralises masked examples.

  Two label forms are accepted, told apart by shape alone:
    * class ids: ``labels.shape == logits.shape[:-1]``, an integer dtype (as optax's
      ``softmax_cross_entropy_with_integer_labels``); returned as int32. A **negative id marks an example
      to ignore**, exactly as ``where=False``: it joins the returned mask. An id >= K is a ValueError
      naming it when the ids are concrete (an eager call); under ``jit`` it cannot be checked, and that
      example's logits are set to NaN, so its loss (and gradient) is NaN, which a training loop's
      non-finite check catches.
    * one-hot or soft labels: ``labels.shape == logits.shape`` (any dtype); returned as float.
  Losses give identical values and gradients for ids and the equivalent one-hot labels; with ids they
  take a fast path that only reads the labelled class (see `label_log_prob`).

  Masked examples get logits 0 and class 0 (ids) or uniform labels before the loss is computed, so a
  NaN/inf in padding can neither appear in the output nor poison the gradient (NaN * 0 = NaN in a
  backward pass; only keeping the bad values out of the computation avoids it).

  Args:
    logits: [..., K] unnormalised scores, any float dtype.
    labels: [...] integer class ids, or [..., K] one-hot/soft labels (rows summing to 1).
    where: None, or a bool array broadcastable to logits.shape[:-1]; False marks an example to ignore.

  Returns:
    (logits, labels, where) with where broadcast to logits.shape[:-1] and combined with the negative ids
    (or None when nothing is masked).
  """
  logits = as_float(logits)
  labels = jnp.asarray(labels)
  if logits.ndim < 1 or logits.shape[-1] < 1:
    raise ValueError(f"logits must have a class axis [..., K] with K >= 1; got shape {logits.shape}")
  where = per_example_mask(where, logits.shape)
  if labels.shape == logits.shape[:-1]:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(
        f"labels of shape {labels.shape} (logits.shape[:-1]) are read as class ids and must "
        f"have an integer dtype; got {labels.dtype}. One-hot/soft labels have the shape of "
        f"logits {logits.shape}"
      )
    labels = labels.astype(jnp.int32)
    where, too_big = class_id_mask(labels, logits.shape[-1], where)
    if where is None:
      return logits, labels, None
    if too_big is None:
      return jnp.where(where[..., None], logits, 0.0), jnp.where(where, labels, 0), where
    # One select per logit either way (masked: 0, out-of-range id: NaN), fused into the loss's first pass.
    # (Only kept examples get NaN: a masked example's NaN logits would reach the gradient as 0 * NaN.)
    fill = jnp.where(where & too_big, jnp.nan, 0.0).astype(logits.dtype)
    keep = where & ~too_big
    return jnp.where(keep[..., None], logits, fill[..., None]), jnp.where(keep, labels, 0), where
  if labels.shape != logits.shape:
    raise ValueError(
      f"labels must be integer class ids of shape logits.shape[:-1] = {logits.shape[:-1]} or "
      f"one-hot/soft labels of shape logits.shape = {logits.shape}; got {labels.shape}"
    )
  labels = as_float(labels)
  if where is None:
    return logits, labels, None
  logits = jnp.where(where[..., None], logits, 0.0)
  labels = jnp.where(where[..., None], labels, 1.0 / logits.shape[-1])
  return logits, labels, where


def is_ids(logits, labels) -> bool:
  """Whether `labels` (as returned by `prepare`) are class ids rather than one-hot/soft labels."""
  return labels.ndim == logits.ndim - 1


def one_hot(logits, labels) -> jax.Array:
  """Labels as one-hot/soft [..., K] float (ids are expanded; soft labels pass through)."""
  if is_ids(logits, labels):
    return jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return labels


def at_label(values, labels) -> jax.Array:
  """values[..., labels]: the entry of each example's labelled class ([..., K] with ids [...] -> [...])."""
  return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


def label_log_prob(logits, labels) -> jax.Array:
  """log p_y for class ids, as ``z_y - logsumexp(z)``: [...] work only, the same terms as optax's
  integer-label cross entropy (whose negative this is)."""
  return at_label(logits, labels) - jax.nn.logsumexp(logits, axis=-1)


def _softmax_parts(z):
  """(max, z - max, e = exp(z - max), s = sum e, log s) over the last axis, kept [..., 1] where reduced."""
  top = jnp.max(z, axis=-1, keepdims=True)
  # As in jax.nn.logsumexp (rows of -inf stay finite). It also keeps XLA:CPU from fusing the max with the
  # subtraction into one kernel that writes the shifted logits out, instead of fusing the subtraction into
  # each consumer.
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  shifted = z - top
  e = jnp.exp(shifted)
  s = jnp.sum(e, axis=-1, keepdims=True)
  return top, shifted, e, s, jnp.log(s)


def with_jvp(value: Callable, value_and_tangent: Callable) -> Callable:
  """f(z, y) = value(z, y) with the forward-mode rule ``value_and_tangent(z, y, dz) -> (f, df)``, where df
  must be linear in dz and written with transposable operations (products with values computed from z,
  sums, selects with a fixed predicate): reverse mode (``jax.grad``) is then JAX's transpose of that rule,
  and higher derivatives (``jax.hessian``) differentiate the rule itself. Labels y get no tangent."""

  @jax.custom_jvp
  def f(z, y):
    return value(z, y)

  @f.defjvp
  def f_jvp(primals, tangents):
    z, y = primals
    return value_and_tangent(z, y, tangents[0])

  return f


def label_mask(z, y):
  """bool [..., K]: the labelled class of each example (a comparison with the class index, no scatter)."""
  return jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == y[..., None]


def label_log_prob_and_sum(logits, labels, class_terms: Callable) -> tuple[jax.Array, jax.Array]:
  r"""For class ids: ``(log p_y, sum_k t_k)`` with :math:`t_k` a per-class term of :math:`\log p_k`, in one
  pass over the classes, with a written-out derivative.

  ``class_terms(log_p, p)`` returns ``(t, u)``, elementwise (``u`` may be a scalar): the terms
  :math:`t(\log p_k)` and their derivatives :math:`u_k = dt/d\log p_k`; ``p`` is ``exp(log_p)`` (passed so
  that the terms need not take a second exponential). It is the normaliser of the normalized losses
  (NCE: :math:`t = -\log p`, NFL, NGCE). The automatic derivative of ``t`` must equal ``u`` (a stop_gradient
  belongs in both): second derivatives differentiate the rule's own computation.

  Why a written-out derivative: with :math:`d \log p_k = dz_k - \sum_j p_j dz_j`,

  .. math:: d \log p_y = dz_y - \langle p, dz \rangle, \qquad
            d \textstyle\sum_k t_k = \langle u, dz \rangle - \langle p, dz \rangle \sum_k u_k,

  one elementwise pass over [..., K] (the label enters as a comparison with the class index); its
  transpose, the gradient :math:`\partial \log p_y / \partial z_j = 1[j = y] - p_j` and
  :math:`\partial \sum_k t_k / \partial z_j = u_j - p_j \sum_k u_k`, is one pass too. Automatic
  differentiation of the same forward computation gives the same values but scatters the label's
  cotangent and re-reads the softmax in several unfused passes (NCE's value and gradient took ~1.5-2x
  as long that way on XLA:CPU). The rule is a ``jax.custom_jvp``, so forward mode (``jax.jvp``,
  ``jax.jacfwd``, ``jax.hessian``) works as well as reverse mode; tests compare every derivative with
  that of the formula written with ``jax.nn.log_softmax``.
  """

  def parts(z, y):
    _, shifted, e, s, log_s = _softmax_parts(z)
    log_p = shifted - log_s
    p = e / s
    t, u = class_terms(log_p, p)
    label = at_label(shifted, y) - log_s[..., 0]
    return (label, jnp.sum(jnp.broadcast_to(t, z.shape), axis=-1)), p, u

  def value_and_tangent(z, y, dz):
    value, p, u = parts(z, y)
    p_dz = jnp.sum(p * dz, axis=-1)
    d_label = jnp.sum(jnp.where(label_mask(z, y), dz, 0.0), axis=-1) - p_dz
    # u stays as class_terms gives it: a constant (NCE's -1) must not become a stored [..., K] residual,
    # whose write and read cost more than the whole loss at large K.
    sum_u = jnp.sum(jnp.broadcast_to(u, z.shape), axis=-1)
    d_sum = jnp.sum(u * dz, axis=-1) - sum_u * p_dz
    return value, (d_label, d_sum)

  return with_jvp(lambda z, y: parts(z, y)[0], value_and_tangent)(logits, labels)


def label_log_prob_and_entropy(logits, labels) -> tuple[jax.Array, jax.Array]:
  r"""For class ids: ``(log p_y, H(p))`` with :math:`H(p) = -\sum_k p_k \log p_k`, from one softmax pass,
  with a written-out derivative (as `label_log_prob_and_sum`; for the entropy it is more direct).

  :math:`H = \log s - \sum_k e_k (z_k - m) / s` with :math:`e = \exp(z - m)`, :math:`s = \sum_k e_k`,
  :math:`m = \max_k z_k`: two non-negative terms, no per-class log. Derivatives
  :math:`dH = -\sum_j p_j (\log p_j + H) dz_j` and :math:`d \log p_y = dz_y - \langle p, dz \rangle`, one
  elementwise pass (a ``jax.custom_jvp``: forward and reverse mode).
  """

  def value(z, y):
    _, shifted, e, s, log_s = _softmax_parts(z)
    entropy = log_s[..., 0] - jnp.sum(e * shifted, axis=-1) / s[..., 0]
    return at_label(shifted, y) - log_s[..., 0], entropy

  def value_and_tangent(z, y, dz):
    _, shifted, e, s, log_s = _softmax_parts(z)
    entropy = log_s[..., 0] - jnp.sum(e * shifted, axis=-1) / s[..., 0]
    label = at_label(shifted, y) - log_s[..., 0]
    p = e / s
    p_dz = jnp.sum(p * dz, axis=-1)
    d_label = jnp.sum(jnp.where(label_mask(z, y), dz, 0.0), axis=-1) - p_dz
    d_entropy = -jnp.sum(p * ((shifted - log_s) + entropy[..., None]) * dz, axis=-1)
    return (label, entropy), (d_label, d_entropy)

  return with_jvp(value, value_and_tangent)(logits, labels)


def cross_entropy(logits, labels) -> jax.Array:
  """-sum_k y_k log p_k for either label form; for ids exactly optax's integer-label CE."""
  if is_ids(logits, labels):
    return -label_log_prob(logits, labels)
  return optax.losses.softmax_cross_entropy(logits, labels)


def label_sum(
  logits, labels, terms: Callable[[jax.Array], jax.Array], log_probs: Optional[jax.Array] = None
) -> jax.Array:
  """sum_k y_k terms(log p_k): with class ids just terms(log p_y), which never touches the other classes.

  `terms` must be elementwise and finite (with finite gradient) for every log-probability, so that the
  zero-weighted classes of a one-hot label contribute exactly 0 and both label forms agree. Pass
  `log_probs` if the caller already has log_softmax(logits).
  """
  if is_ids(logits, labels):
    if log_probs is None:
      return terms(label_log_prob(logits, labels))
    return terms(at_label(log_probs, labels))
  if log_probs is None:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.sum(labels * terms(log_probs), axis=-1)


def mask(losses: jax.Array, where: Optional[jax.Array]) -> jax.Array:
  """Sets masked entries to 0 (with zero gradient); `where` None keeps everything."""
  if where is None:
    return losses
  return jnp.where(where, losses, 0.0)


def select(pred, if_true: Callable[[], Any], if_false: Callable[[], Any]):
  """`if_true()` if pred else `if_false()`: chosen in Python when pred is concrete, else jnp.where.

  Used to make special cases (alpha == 0, q == 0, t == 1, ...) exact for concrete hyperparameters while
  keeping traced ones valid. Both branches must be finite (and have finite gradients) for every input, as
  under tracing both are evaluated.
  """
  if is_concrete(pred):
    return if_true() if bool(pred) else if_false()
  return jnp.where(pred, if_true(), if_false())


def safe_nonzero(x, fill=1.0):
  """x with zeros replaced by `fill`: a denominator valid in the branch that is not selected."""
  return jnp.where(x == 0, fill, x)


def keep_labelled(logits, labels, where) -> Optional[jax.Array]:
  """`where` with examples whose class id is negative (ignored examples) turned off.

  A negative class id marks an example to ignore, exactly as ``where=False``: loss 0, zero gradient, and left
  out of every batch statistic. One-hot/soft labels pass ``where`` through unchanged.
  """
  labels = jnp.asarray(labels)
  if labels.shape != jnp.shape(logits)[:-1] or not jnp.issubdtype(labels.dtype, jnp.integer):
    return where
  labelled = labels >= 0
  return labelled if where is None else jnp.broadcast_to(jnp.asarray(where, bool), labels.shape) & labelled


def replicated(x) -> jax.Array:
  """Under jit with explicitly sharded inputs, sorting over a sharded axis is an error: gather first."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  if isinstance(sharding, NamedSharding) and any(s is not None for s in sharding.spec):
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))
  return x
