"""Helpers shared by every loss: dtype handling, per-example masking and hyperparameter checks."""
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


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


def check_range(name: str, value, lo: float = -math.inf, hi: float = math.inf, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
  """Raises ValueError if a concrete scalar hyperparameter lies outside [lo, hi] (ends open if asked).

  Traced values are skipped: the check is a Python-level guard, and skipping tracers keeps the losses
  jittable with hyperparameters passed as traced arguments.
  """
  if not is_concrete(value):
    return
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} must be a real number; valid range is "
                     f"{_fmt_range(lo, hi, lo_open, hi_open)}") from None
  below = v <= lo if lo_open else v < lo
  above = v >= hi if hi_open else v > hi
  if math.isnan(v) or below or above:
    raise ValueError(f"{name}={value!r} is out of range; valid range is "
                     f"{_fmt_range(lo, hi, lo_open, hi_open)}")


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
  """Casts logits/labels to float, checks shapes, and neutralises masked examples.

  Masked examples get logits 0 and uniform labels before the loss is computed, so a NaN/inf in padding
  can neither appear in the output nor poison the gradient (NaN * 0 = NaN in a backward pass; only
  keeping the bad values out of the computation avoids it).

  Args:
    logits: [..., K] unnormalised scores, any float dtype.
    labels: [..., K] one-hot or soft labels (rows summing to 1).
    where: None, or a bool array broadcastable to logits.shape[:-1]; False marks an example to ignore.

  Returns:
    (logits, labels, where) with where broadcast to logits.shape[:-1] (or None).
  """
  logits = as_float(logits)
  labels = as_float(labels)
  if logits.ndim < 1 or labels.shape != logits.shape:
    raise ValueError(f"labels must be one-hot or soft labels with the shape of logits [..., K]; got "
                     f"logits {logits.shape} and labels {labels.shape}")
  if where is None:
    return logits, labels, None
  where = jnp.broadcast_to(jnp.asarray(where, bool), logits.shape[:-1])
  logits = jnp.where(where[..., None], logits, 0.0)
  labels = jnp.where(where[..., None], labels, 1.0 / logits.shape[-1])
  return logits, labels, where


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
