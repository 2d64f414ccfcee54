"""Name -> loss registry: `get(name, **hparams)` returns a configured, validated per-example loss.

Every registered loss is a function `f(logits, labels, *, <hparams>, where=None[, weights][, axis_name]
[, return_aux])`; its hyperparameters are its other keyword-only parameters, found by introspection, so
registering a loss is one line. `label_smoothing` is added for every loss (`optax.smooth_labels` on the
labels first), except where the loss has its own (bi-tempered, which uses the reference's convention).
"""

import dataclasses
import inspect
import types
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_losses import (
  _utils,
  asymmetric,
  bitempered,
  classification,
  clipping,
  correction,
  divergence,
  epsilon_softmax,
  generalized,
  logitclip,
  negative,
  ogc,
  phuber,
  regularized,
  symmetric,
  tamed,
  taylor,
)

_LOSSES: dict[str, Callable] = {
  fn.__name__: fn
  for fn in (
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
    clipping.oracle_small_loss_selection,
    negative.normalized_negative_cross_entropy,
    negative.normalized_negative_focal_loss,
    negative.active_negative_loss,
    asymmetric.asymmetric_generalized_cross_entropy,
    asymmetric.asymmetric_unhinged_loss,
    asymmetric.asymmetric_exponential_loss,
    asymmetric.nce_asymmetric_loss,
    asymmetric.asymmetric_mean_squared_error,
    asymmetric.joint_asymmetric_loss,
    epsilon_softmax.epsilon_softmax_cross_entropy,
    epsilon_softmax.epsilon_softmax_cross_entropy_mae,
    divergence.ldr_kl_loss,
    divergence.jensen_shannon_divergence,
    taylor.taylor_cross_entropy,
    logitclip.logit_clipping,
    phuber.partially_huberised_cross_entropy,
    regularized.early_learning_regularization,
    regularized.sparse_regularization,
    ogc.optimized_gradient_clipping,
  )
}

# Keyword-only parameters supplied per call rather than configured. `epoch` (int32 scalar: epochs completed)
# is given by a training loop to losses with a schedule; per-example state is passed under the names of
# its keys (see `Training`).
_CALL_ARGS = frozenset({"where", "axis_name", "weights", "return_aux", "epoch", "window"})
LABEL_SMOOTHING = "label_smoothing"


@dataclasses.dataclass(frozen=True)
class Training:
  """What a loss needs from a training loop beyond (logits, labels): the loss-state protocol.

  A training loop (experiments/train.py) reads this through the `Loss` object and never names a loss:
    * `example_state(num_classes)`: {key: initial row} of per-example state kept for every
      training example, indexed by the example's position in the training set. Each step passes the
      batch's rows to the loss as keyword arguments named by the keys; a loss that updates its state
      returns the new rows as ``aux["example_state"]`` (with ``return_aux=True``).
    * `refresh(logits, labels, hparams)`: new rows for every example, computed by the loop from one pass of
      the model (eval mode) over the whole training set at the epochs where `refresh_due(epoch, hparams)`.
    * `extra_hparams`: hyperparameters only these hooks use (schedules), {name: default}.
    * `check(hparams, num_epochs)`: raises ValueError for a schedule that cannot act within the run.
  Schedules of the epoch alone need no entry here: the loss takes an ``epoch`` argument. Inputs the loop
  provides from the noise model (the transition matrix) are required hyperparameters, filled in by name.
  """

  example_state: Optional[Callable[[int], dict]] = None
  refresh: Optional[Callable] = None
  refresh_due: Optional[Callable[[int, Mapping[str, Any]], bool]] = None
  extra_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check: Optional[Callable[[Mapping[str, Any], int], None]] = None


def _check_pruning(hp, num_epochs):
  if hp["prune_start_epoch"] >= num_epochs:
    raise ValueError(
      f"prune_start_epoch={hp['prune_start_epoch']} is out of range for num_epochs={num_epochs}; "
      f"valid range is [0, {num_epochs - 1}] (otherwise the weights are never computed and the "
      "run trains plain Lq)"
    )


def _check_warmup(hp, num_epochs):
  if hp["warmup_epochs"] >= num_epochs:
    raise ValueError(
      f"warmup_epochs={hp['warmup_epochs']} is out of range for num_epochs={num_epochs}; valid "
      f"range is [0, {num_epochs - 1}] (otherwise the loss is never clipped)"
    )


_TRUNCATED_LQ = Training(
  # The weight step of the alternating convex search: w = 1[p_y > k] from the model at fixed epochs.
  example_state=lambda num_classes: {"weights": np.float32(1.0)},
  refresh=lambda logits, labels, hp: {
    "weights": generalized.truncated_lq_prune_weights(logits, labels, q=hp["q"], k=hp["k"])
  },
  refresh_due=lambda epoch, hp: (
    epoch >= hp["prune_start_epoch"] and (epoch - hp["prune_start_epoch"]) % hp["prune_every_epochs"] == 0
  ),
  extra_hparams={"prune_start_epoch": 40, "prune_every_epochs": 10},
  check=_check_pruning,
)
_WARMUP = Training(check=_check_warmup)
_TRAINING: dict[str, Training] = {
  "truncated_generalized_cross_entropy": _TRUNCATED_LQ,
  "binary_cross_entropy_dynamic_clipping": _WARMUP,
  "clipped_cross_entropy": _WARMUP,
  "clipped_focal_loss": _WARMUP,
  "oracle_small_loss_selection": _WARMUP,
  # ELR's running average of each example's predictions, zeros initially; updated by the loss itself.
  "early_learning_regularization": Training(
    example_state=lambda num_classes: {"targets": np.zeros(num_classes, np.float32)}
  ),
}
_NO_TRAINING = Training()


def names() -> list[str]:
  """All registered loss names, sorted."""
  return sorted(_LOSSES)


def _hparam_defaults(name) -> dict[str, Any]:
  """{hparam: default} from the signature (plus training-only hparams); required hparams (no default) map
  to inspect.Parameter.empty."""
  params = inspect.signature(_LOSSES[name]).parameters.values()
  defaults = {
    p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS
  }
  state_keys = set(_example_state_keys(name))
  defaults = {k: v for k, v in defaults.items() if k not in state_keys}
  defaults.update(_TRAINING.get(name, _NO_TRAINING).extra_hparams)
  defaults.setdefault(LABEL_SMOOTHING, 0.0)
  return defaults


def _example_state_keys(name) -> tuple[str, ...]:
  training = _TRAINING.get(name, _NO_TRAINING)
  if training.example_state is None:
    return ()
  return tuple(training.example_state(2))


def _accepts(fn, arg: str) -> bool:
  return arg in inspect.signature(fn).parameters


def required_hparams(name: str) -> list[str]:
  """Hyperparameters of `name` without a default: a training loop fills those it can provide by name
  (the noise model's `transition_matrix`)."""
  if name not in _LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid names are {names()}")
  return sorted(k for k, v in _hparam_defaults(name).items() if v is inspect.Parameter.empty)


def hparam_types() -> dict[str, type]:
  """{hparam: Python type} over all registered losses (e.g. for typed config placeholders).

  The type is that of the default; a hyperparameter without default is its annotated type, or else an
  array-like (the transition matrix), reported as `tuple` (nested tuples are accepted).
  """
  types: dict[str, type] = {}
  for name in _LOSSES:
    params = inspect.signature(_LOSSES[name]).parameters
    for hp, default in _hparam_defaults(name).items():
      annotation = params[hp].annotation if hp in params else None
      if default is not inspect.Parameter.empty:
        typ = type(default)
      else:
        typ = annotation if isinstance(annotation, type) and annotation is not inspect.Parameter.empty else tuple
      if types.setdefault(hp, typ) is not typ:
        raise TypeError(
          f"hyperparameter {hp!r} has type {typ.__name__} in {name} but "
          f"{types[hp].__name__} elsewhere; registered losses must agree"
        )
  return types


def _freeze(value):
  """A hashable, value-comparable form: arrays and sequences become nested tuples of Python scalars."""
  if isinstance(value, (str, bool, int, float)) or value is None:
    return value
  if isinstance(value, (np.generic,)):
    return value.item()
  if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
    array = np.asarray(value)
    if array.dtype == object:
      return tuple(_freeze(v) for v in value)
    return tuple(_freeze(v) for v in array.tolist()) if array.ndim else array.item()
  raise TypeError(
    f"hyperparameter value {value!r} of type {type(value).__name__} is not a number, string, bool or array"
  )


class Loss:
  """A registered loss with its hyperparameters bound; call it like the loss function.

  Frozen and compared by value: two `get` calls with equal hyperparameters give equal objects with equal
  hashes (arrays compare by content), so a Loss can be a static jit argument or a cache key.

  Attributes:
    name: the registry name.
    hparams: read-only mapping of every hyperparameter with its value (defaults filled in, arrays as
      nested tuples), including label_smoothing and training-only ones.
    uses_example_weights: whether calls accept per-example `weights` (truncated Lq).
    uses_batch_statistics: whether the loss of one example depends on the rest of the batch (dynamic
      clipping); in data-parallel code pass `axis_name` so the statistics are global.
    uses_epoch: whether the loss follows a schedule of the epoch (pass `epoch` when training).
    example_state_keys: names of the per-example state it keeps in training (see `Training`).
  """

  __slots__ = ("name", "hparams", "_key", "_fn", "_training", "_label_smoothing", "_fn_hparams", "__weakref__")

  def __init__(self, name: str, hparams: Mapping[str, Any]):
    fn = _LOSSES[name]
    frozen = {k: _freeze(v) for k, v in hparams.items()}
    setattr_ = object.__setattr__
    setattr_(self, "name", name)
    setattr_(self, "hparams", types.MappingProxyType(frozen))
    setattr_(self, "_key", (name, tuple(sorted(frozen.items()))))
    setattr_(self, "_fn", fn)
    setattr_(self, "_training", _TRAINING.get(name, _NO_TRAINING))
    setattr_(self, "_label_smoothing", 0.0 if _accepts(fn, LABEL_SMOOTHING) else frozen[LABEL_SMOOTHING])
    extra = set(self._training.extra_hparams)
    setattr_(
      self,
      "_fn_hparams",
      {k: v for k, v in frozen.items() if k not in extra and (k != LABEL_SMOOTHING or _accepts(fn, k))},
    )

  def __setattr__(self, key, value):
    raise AttributeError(f"Loss is frozen; use robust_losses.get({self.name!r}, ...) for other hyperparameters")

  def __eq__(self, other):
    return isinstance(other, Loss) and self._key == other._key

  def __hash__(self):
    return hash(self._key)

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items() if k != "transition_matrix")
    return f"Loss({self.name!r}{', ' if args else ''}{args})"

  @property
  def uses_example_weights(self) -> bool:
    return _accepts(self._fn, "weights")

  @property
  def uses_batch_statistics(self) -> bool:
    return _accepts(self._fn, "axis_name")

  @property
  def uses_epoch(self) -> bool:
    return _accepts(self._fn, "epoch")

  @property
  def example_state_keys(self) -> tuple[str, ...]:
    return _example_state_keys(self.name)

  def _labels(self, logits, labels):
    if not self._label_smoothing:
      return labels
    logits, labels, _ = _utils.prepare(logits, labels, None)
    return optax.smooth_labels(_utils.one_hot(logits, labels), self._label_smoothing)

  def _call(self, logits, labels, where, axis_name, weights, epoch, example_state, return_aux):
    kwargs = dict(self._fn_hparams, where=where)
    if weights is not None:
      if not self.uses_example_weights:
        raise ValueError(
          f"{self.name} does not take per-example weights; only losses with "
          f"uses_example_weights=True do (truncated_generalized_cross_entropy)"
        )
      kwargs["weights"] = weights
    for key, rows in (example_state or {}).items():
      if key not in self.example_state_keys:
        raise ValueError(
          f"{self.name} keeps no example state {key!r}; its state keys are {list(self.example_state_keys)}"
        )
      kwargs[key] = rows
    # Per-example losses need no cross-device communication, so axis_name is simply not passed to them;
    # likewise the epoch goes only to losses with a schedule.
    if self.uses_batch_statistics:
      kwargs["axis_name"] = axis_name
    if self.uses_epoch and epoch is not None:
      kwargs["epoch"] = epoch
    labels = self._labels(logits, labels)
    if return_aux and _accepts(self._fn, "return_aux"):
      return self._fn(logits, labels, return_aux=True, **kwargs)
    losses = self._fn(logits, labels, **kwargs)
    return (losses, {}) if return_aux else losses

  def __call__(
    self,
    logits,
    labels,
    *,
    where: Optional[jax.Array] = None,
    axis_name=None,
    weights: Optional[jax.Array] = None,
    epoch=None,
    example_state=None,
  ) -> jax.Array:
    """Per-example losses [...] for logits and class ids [...] or one-hot/soft labels [..., K]."""
    return self._call(logits, labels, where, axis_name, weights, epoch, example_state, return_aux=False)

  def call_with_aux(
    self,
    logits,
    labels,
    *,
    where: Optional[jax.Array] = None,
    axis_name=None,
    weights: Optional[jax.Array] = None,
    epoch=None,
    example_state=None,
  ) -> tuple[jax.Array, dict[str, Any]]:
    """(per-example losses, aux). aux holds {'clipped', 'unclipped'} (float32 [...]) for the dynamic-
    clipping losses, 'example_state' (the batch's updated rows) for losses that update their state, and is
    {} otherwise."""
    return self._call(logits, labels, where, axis_name, weights, epoch, example_state, return_aux=True)

  # ---- the training protocol (see `Training`)
  def init_example_state(self, num_examples: int, num_classes: int) -> dict[str, np.ndarray]:
    """{key: [num_examples, ...]} initial per-example state ({} for losses without state)."""
    if self._training.example_state is None:
      return {}
    rows = self._training.example_state(num_classes)
    return {k: np.broadcast_to(np.asarray(v), (num_examples, *np.shape(v))).copy() for k, v in rows.items()}

  def refresh_due(self, epoch: int) -> bool:
    """Whether the loop recomputes the example state with `refresh` at the start of `epoch` (0-based)."""
    return self._training.refresh_due is not None and bool(self._training.refresh_due(epoch, self.hparams))

  def refresh(self, logits, labels) -> dict[str, jax.Array]:
    """New example-state rows from eval-mode logits of the examples, with the labels the loss trains on
    (label smoothing included)."""
    return self._training.refresh(logits, self._labels(logits, labels), self.hparams)

  def check_training(self, num_epochs: int) -> None:
    """Raises ValueError when a schedule of this loss cannot act within `num_epochs` epochs."""
    if self._training.check is not None:
      self._training.check(self.hparams, num_epochs)


def get(name: str, **hparams) -> Loss:
  """The loss `name` with `hparams` bound (defaults for the rest); validated now, outside jit.

  Raises:
    ValueError: unknown name (lists the valid ones), unknown hyperparameter (lists the loss's valid
      ones), missing required hyperparameter, or a value out of range (names value and valid range).
  """
  if name not in _LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid names are {names()}")
  defaults = _hparam_defaults(name)
  unknown = sorted(set(hparams) - set(defaults))
  if unknown:
    raise ValueError(
      f"unknown hyperparameter(s) {unknown} for loss {name!r}; valid hyperparameters are {sorted(defaults)}"
    )
  resolved = {**defaults, **hparams}
  missing = sorted(k for k, v in resolved.items() if v is inspect.Parameter.empty)
  if missing:
    raise ValueError(f"loss {name!r} needs hyperparameter(s) {missing}; valid hyperparameters are {sorted(defaults)}")
  # Negative values are negative label smoothing (NLS; Wei et al., ICML 2022): optax.smooth_labels computes
  # (1 - r) e_y + r / K for any r, which is exactly the official loss_gls target.
  _utils.check_range(LABEL_SMOOTHING, resolved[LABEL_SMOOTHING], hi=1.0, hi_open=True)
  for key in _TRAINING.get(name, _NO_TRAINING).extra_hparams:
    _utils.check_int(key, resolved[key], 1 if key.endswith("every_epochs") else 0)
  loss = Loss(name, resolved)
  # Abstract evaluation runs every Python-level hyperparameter check of the loss without computing
  # anything, so a bad value fails here rather than at the first training step.
  num_classes = np.shape(resolved["transition_matrix"])[-1] if "transition_matrix" in resolved else 3
  spec = jax.ShapeDtypeStruct((2, max(num_classes, 2)), jnp.float32)
  jax.eval_shape(loss, spec, spec)
  return loss
