"""Helpers shared by every loss: dtype handling, per-example masking and hyperparameter checks."""

import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec


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


def check_range(
  name: str, value, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False
) -> None:
  """Raises ValueError if a concrete scalar hyperparameter lies outside [lo, hi] (ends open if asked).

  Traced values are skipped: the check is a Python-level guard, and skipping tracers keeps the losses
  jittable with hyperparameters passed as traced arguments.
  """
  if not is_concrete(value):
    return
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(
      f"{name}={value!r} must be a real number; valid range is {_fmt_range(lo, hi, lo_open, hi_open)}"
    ) from None
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
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not a valid choice; valid choices are {sorted(choices)}")


def prepare(logits, labels, where) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
  """Casts logits to float, checks the label form, and neutralises masked examples.

  Two label forms are accepted, told apart by shape alone:
    * class ids: ``labels.shape == logits.shape[:-1]``, an integer dtype (as optax's
      ``softmax_cross_entropy_with_integer_labels``); returned as int32.
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
    (logits, labels, where) with where broadcast to logits.shape[:-1] (or None).
  """
  logits = as_float(logits)
  labels = jnp.asarray(labels)
  if logits.ndim < 1:
    raise ValueError(f"logits must have a class axis [..., K]; got shape {logits.shape}")
  if labels.shape == logits.shape[:-1]:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(
        f"labels of shape {labels.shape} (logits.shape[:-1]) are read as class ids and must "
        f"have an integer dtype; got {labels.dtype}. One-hot/soft labels have the shape of "
        f"logits {logits.shape}"
      )
    labels = labels.astype(jnp.int32)
  elif labels.shape == logits.shape:
    labels = as_float(labels)
  else:
    raise ValueError(
      f"labels must be integer class ids of shape logits.shape[:-1] = {logits.shape[:-1]} or "
      f"one-hot/soft labels of shape logits.shape = {logits.shape}; got {labels.shape}"
    )
  if where is None:
    return logits, labels, None
  where = jnp.broadcast_to(jnp.asarray(where, bool), logits.shape[:-1])
  logits = jnp.where(where[..., None], logits, 0.0)
  if is_ids(logits, labels):
    labels = jnp.where(where, labels, 0)
  else:
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


def _custom_vjp(forward, backward):
  """f(z, y) = forward(z, y)[0] with the VJP `backward` (labels y get no cotangent)."""

  @jax.custom_vjp
  def f(z, y):
    return forward(z, y)[0]

  f.defvjp(forward, backward)
  return f


def label_log_prob_and_sum(logits, labels, class_terms: Callable) -> tuple[jax.Array, jax.Array]:
  r"""For class ids: ``(log p_y, sum_k t_k)`` with :math:`t_k` a per-class term of :math:`\log p_k`, in one
  pass over the classes, with a written-out gradient.

  ``class_terms(log_p, p)`` returns ``(t, u)``, elementwise (``u`` may be a scalar): the terms
  :math:`t(\log p_k)` and their derivatives :math:`u_k = dt/d\log p_k`; ``p`` is ``exp(log_p)`` (passed so
  that the terms need not take a second exponential). It is the normaliser of the normalized losses
  (NCE: :math:`t = -\log p`, NFL, NGCE).

  Why a custom VJP: the gradient of the pair is, with :math:`\partial \log p_k / \partial z_j = 1[j = k] - p_j`,

  .. math:: \partial \log p_y / \partial z_j = 1[j = y] - p_j, \qquad
            \partial \textstyle\sum_k t_k / \partial z_j = u_j - p_j \sum_k u_k,

  one elementwise pass over [..., K] (the label enters as a comparison with the class index). Automatic
  differentiation of the same forward computation gives the same values but scatters the label's
  cotangent and re-reads the softmax in several unfused passes (NCE's value and gradient took ~1.5-2x
  as long that way on XLA:CPU). The result is exactly the gradient of the forward formula; tests compare it
  with ``jax.grad`` of the formula written with ``jax.nn.log_softmax``. As with any ``jax.custom_vjp``,
  forward-mode differentiation (``jax.jvp``, ``jax.hessian``) is not available through it; the one-hot
  form of the same losses supports it.
  """

  def forward(z, y):
    _, shifted, e, s, log_s = _softmax_parts(z)
    log_p = shifted - log_s
    p = e / s
    t, u = class_terms(log_p, p)
    label = at_label(shifted, y) - log_s[..., 0]
    # u stays as class_terms gives it: a constant (NCE's -1) must not become a stored [..., K] residual,
    # whose write and read cost more than the whole loss at large K.
    return (label, jnp.sum(jnp.broadcast_to(t, z.shape), axis=-1)), (p, u, y)

  def backward(residuals, cotangents):
    p, u, y = residuals
    g_label, g_sum = (c[..., None] for c in cotangents)
    is_label = jax.lax.broadcasted_iota(jnp.int32, p.shape, p.ndim - 1) == y[..., None]
    sum_u = jnp.sum(jnp.broadcast_to(u, p.shape), axis=-1, keepdims=True)
    grad = g_sum * u - p * (g_sum * sum_u + g_label) + jnp.where(is_label, g_label, 0.0)
    return grad.astype(p.dtype), None

  return _custom_vjp(forward, backward)(logits, labels)


def label_log_prob_and_entropy(logits, labels) -> tuple[jax.Array, jax.Array]:
  r"""For class ids: ``(log p_y, H(p))`` with :math:`H(p) = -\sum_k p_k \log p_k`, from one softmax pass,
  with a written-out gradient (as `label_log_prob_and_sum`; for the entropy it is more direct).

  :math:`H = \log s - \sum_k e_k (z_k - m) / s` with :math:`e = \exp(z - m)`, :math:`s = \sum_k e_k`,
  :math:`m = \max_k z_k`: two non-negative terms, no per-class log. Gradient
  :math:`\partial H / \partial z_j = -p_j (\log p_j + H)` and
  :math:`\partial \log p_y / \partial z_j = 1[j = y] - p_j`, in one elementwise pass.
  """

  def forward(z, y):
    top, shifted, e, s, log_s = _softmax_parts(z)
    entropy = log_s[..., 0] - jnp.sum(e * shifted, axis=-1) / s[..., 0]
    label = at_label(shifted, y) - log_s[..., 0]
    return (label, entropy), (z, y, e, top, s, log_s, entropy)

  def backward(residuals, cotangents):
    z, y, e, top, s, log_s, entropy = residuals
    g_label, g_entropy = (c[..., None] for c in cotangents)
    p = e / s
    log_p = (z - top) - log_s
    is_label = jax.lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == y[..., None]
    grad = jnp.where(is_label, g_label, 0.0) - p * (g_entropy * (log_p + entropy[..., None]) + g_label)
    return grad.astype(z.dtype), None

  return _custom_vjp(forward, backward)(logits, labels)


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
