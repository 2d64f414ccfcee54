"""Name -> loss registry: `get(name, **hparams)` returns a configured, validated per-example loss.

Every registered loss is a function `f(logits, labels, *, <hparams>, where=None[, weights][, axis_name]
[, return_aux])`; its hyperparameters are its other keyword-only parameters, found by introspection, so
registering a loss is one line. `label_smoothing` is added for every loss (`optax.smooth_labels` on the
labels first), except where the loss has its own (bi-tempered, which uses the reference's convention).
"""
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_losses import _utils
from robust_losses import bitempered
from robust_losses import classification
from robust_losses import clipping
from robust_losses import correction
from robust_losses import generalized
from robust_losses import symmetric
from robust_losses import tamed

_LOSSES: dict[str, Callable] = {fn.__name__: fn for fn in (
    classification.softmax_cross_entropy,
    classification.sigmoid_binary_cross_entropy,
    classification.mean_absolute_error,
    classification.mean_squared_error,
    classification.focal_loss,
    classification.bootstrapped_cross_entropy,
    tamed.tamed_cross_entropy,
    generalized.generalized_cross_entropy,
    generalized.truncated_generalized_cross_entropy,
    symmetric.reverse_cross_entropy,
    symmetric.symmetric_cross_entropy,
    symmetric.normalized_cross_entropy,
    symmetric.normalized_focal_loss,
    symmetric.normalized_generalized_cross_entropy,
    symmetric.active_passive_loss,
    correction.forward_corrected_cross_entropy,
    correction.backward_corrected_cross_entropy,
    bitempered.bi_tempered_logistic_loss,
    clipping.binary_cross_entropy_dynamic_clipping,
    clipping.clipped_cross_entropy,
    clipping.clipped_focal_loss,
)}

# Keyword-only parameters supplied per call rather than configured.
_CALL_ARGS = frozenset({"where", "axis_name", "weights", "return_aux"})
LABEL_SMOOTHING = "label_smoothing"


def names() -> list[str]:
  """All registered loss names, sorted."""
  return sorted(_LOSSES)


def _hparam_defaults(fn) -> dict[str, Any]:
  """{hparam: default} from the signature; required hparams (no default) map to inspect.Parameter.empty."""
  params = inspect.signature(fn).parameters.values()
  defaults = {p.name: p.default for p in params
              if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS}
  defaults.setdefault(LABEL_SMOOTHING, 0.0)
  return defaults


def _accepts(fn, arg: str) -> bool:
  return arg in inspect.signature(fn).parameters


def hparam_types() -> dict[str, type]:
  """{hparam: Python type} over all registered losses (e.g. for typed config placeholders).

  The type is that of the default; a hyperparameter without default (the transition matrix) is an
  array-like, reported as `tuple` (nested tuples are accepted).
  """
  types: dict[str, type] = {}
  for name, fn in _LOSSES.items():
    for hp, default in _hparam_defaults(fn).items():
      typ = tuple if default is inspect.Parameter.empty else type(default)
      if types.setdefault(hp, typ) is not typ:
        raise TypeError(f"hyperparameter {hp!r} has type {typ.__name__} in {name} but "
                        f"{types[hp].__name__} elsewhere; registered losses must agree")
  return types


class Loss:
  """A registered loss with its hyperparameters bound; call it like the loss function.

  Attributes:
    name: the registry name.
    hparams: every hyperparameter with its value (defaults filled in), including label_smoothing.
    uses_example_weights: whether calls accept per-example `weights` (truncated Lq).
    uses_batch_statistics: whether the loss of one example depends on the rest of the batch (dynamic
      clipping); in data-parallel code pass `axis_name` so the statistics are global.
  """

  def __init__(self, name: str, fn: Callable, hparams: dict[str, Any]):
    self.name = name
    self.hparams = dict(hparams)
    self.uses_example_weights = _accepts(fn, "weights")
    self.uses_batch_statistics = _accepts(fn, "axis_name")
    self._returns_aux = _accepts(fn, "return_aux")
    self._fn = fn
    self._label_smoothing = 0.0 if _accepts(fn, LABEL_SMOOTHING) else hparams[LABEL_SMOOTHING]
    self._fn_hparams = {k: v for k, v in hparams.items() if k != LABEL_SMOOTHING or _accepts(fn, k)}

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items() if k != "transition_matrix")
    return f"Loss({self.name!r}{', ' if args else ''}{args})"

  def _call(self, logits, labels, where, axis_name, weights, return_aux):
    kwargs = dict(self._fn_hparams, where=where)
    if weights is not None:
      if not self.uses_example_weights:
        raise ValueError(f"{self.name} does not take per-example weights; only losses with "
                         f"uses_example_weights=True do (truncated_generalized_cross_entropy)")
      kwargs["weights"] = weights
    # Per-example losses need no cross-device communication, so axis_name is simply not passed to them.
    if self.uses_batch_statistics:
      kwargs["axis_name"] = axis_name
    if self._label_smoothing:
      labels = optax.smooth_labels(_utils.as_float(labels), self._label_smoothing)
    if return_aux and self._returns_aux:
      return self._fn(logits, labels, return_aux=True, **kwargs)
    losses = self._fn(logits, labels, **kwargs)
    return (losses, {}) if return_aux else losses

  def __call__(self, logits, labels, *, where: Optional[jax.Array] = None, axis_name=None,
               weights: Optional[jax.Array] = None) -> jax.Array:
    """Per-example losses [...] for logits and one-hot/soft labels [..., K]."""
    return self._call(logits, labels, where, axis_name, weights, return_aux=False)

  def call_with_aux(self, logits, labels, *, where: Optional[jax.Array] = None, axis_name=None,
                    weights: Optional[jax.Array] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(per-example losses, aux). aux is {'clipped', 'unclipped'} (float32 [...]) for the dynamic-
    clipping losses and {} otherwise."""
    return self._call(logits, labels, where, axis_name, weights, return_aux=True)


def get(name: str, **hparams) -> Loss:
  """The loss `name` with `hparams` bound (defaults for the rest); validated now, outside jit.

  Raises:
    ValueError: unknown name (lists the valid ones), unknown hyperparameter (lists the loss's valid
      ones), missing required hyperparameter, or a value out of range (names value and valid range).
  """
  if name not in _LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid names are {names()}")
  fn = _LOSSES[name]
  defaults = _hparam_defaults(fn)
  unknown = sorted(set(hparams) - set(defaults))
  if unknown:
    raise ValueError(f"unknown hyperparameter(s) {unknown} for loss {name!r}; valid hyperparameters "
                     f"are {sorted(defaults)}")
  resolved = {**defaults, **hparams}
  missing = sorted(k for k, v in resolved.items() if v is inspect.Parameter.empty)
  if missing:
    raise ValueError(f"loss {name!r} needs hyperparameter(s) {missing}; valid hyperparameters are "
                     f"{sorted(defaults)}")
  _utils.check_range(LABEL_SMOOTHING, resolved[LABEL_SMOOTHING], 0.0, 1.0, hi_open=True)
  loss = Loss(name, fn, resolved)
  # Abstract evaluation runs every Python-level hyperparameter check of the loss without computing
  # anything, so a bad value fails here rather than at the first training step.
  num_classes = np.shape(resolved["transition_matrix"])[-1] if "transition_matrix" in resolved else 3
  spec = jax.ShapeDtypeStruct((2, max(num_classes, 2)), jnp.float32)
  jax.eval_shape(loss, spec, spec)
  return loss
