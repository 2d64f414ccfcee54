"""Name -> loss registry: `get(name, **hparams)` returns a configured, validated per-example loss.

Every registered loss is a function ``f(logits, labels, *, <hparams>, where=None[, weights][, axis_name]
[, epoch][, return_aux][, <state keys>])`` (the contract `register` checks); its hyperparameters are its
other keyword-only parameters, found by introspection. `label_smoothing` is added for every loss
(`optax.smooth_labels` on the labels first), except where the loss has its own (bi-tempered, which uses the
reference's convention). What a loss needs from a training loop (per-example state, schedules) is declared
next to the loss, in its module's ``TRAINING`` dict of `protocol.Training` records, and read from there.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

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
  protocol,
  regularized,
  symmetric,
  tamed,
  taylor,
)
from robust_losses._utils import AxisName

# Public here for backward compatibility: the protocol's record lives in `protocol`.
Training = protocol.Training

# Keyword-only parameters supplied per call rather than configured. `epoch` (int32 scalar: epochs completed)
# is given by a training loop to losses with a schedule; per-example state is passed under the names of
# its keys (see `protocol.Training`).
_CALL_ARGS = frozenset(
  {"where", "axis_name", "weights", "return_aux", "epoch", "window", "step_state", "learning_rate"}
)
LABEL_SMOOTHING = "label_smoothing"
# Hyperparameter types a config can hold (ml_collections placeholders); required ones may be array-like.
_HPARAM_TYPES = (float, int, str, bool)
_ANNOTATION_TYPES = {t.__name__: t for t in _HPARAM_TYPES}


@dataclasses.dataclass(frozen=True)
class _Entry:
  fn: Callable
  training: protocol.Training
  builtin: bool


_REGISTRY: dict[str, _Entry] = {}


def names() -> list[str]:
  """All registered loss names (built-in and added with :func:`register`), sorted."""
  return sorted(_REGISTRY)


def _unknown_loss(name) -> ValueError:
  close = difflib.get_close_matches(str(name), names(), n=3, cutoff=0.6)
  hint = f"did you mean {' or '.join(map(repr, close))}? Valid" if close else "valid"
  return ValueError(f"unknown loss {name!r}; {hint} names are {names()}")


def _entry(name) -> _Entry:
  if not isinstance(name, str) or name not in _REGISTRY:
    raise _unknown_loss(name)
  return _REGISTRY[name]


def _hparam_defaults(name) -> dict[str, Any]:
  """{hparam: default} from the signature (plus training-only hparams); required hparams (no default) map
  to inspect.Parameter.empty."""
  entry = _REGISTRY[name]
  state_keys = set(entry.training.example_state_keys())
  if entry.training.step_state is not None:
    state_keys.add(entry.training.step_state.argument)
  defaults = {
    p.name: p.default
    for p in inspect.signature(entry.fn).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS and p.name not in state_keys
  }
  defaults.update(entry.training.extra_hparams)
  defaults.setdefault(LABEL_SMOOTHING, 0.0)
  return defaults


def _accepts(fn, arg: str) -> bool:
  return arg in inspect.signature(fn).parameters


def required_hparams(name: str) -> list[str]:
  """Hyperparameters of `name` without a default: a training loop fills those it can provide by name
  (the noise model's `transition_matrix`).

  Raises:
    ValueError: unknown name (suggests the closest registered names and lists all).
  """
  _entry(name)
  return sorted(k for k, v in _hparam_defaults(name).items() if v is inspect.Parameter.empty)


def hparam_defaults(name: str) -> dict[str, Any]:
  """{hyperparameter: default} of loss `name`: what ``get(name)`` binds when nothing is given (the required
  hyperparameters of :func:`required_hparams` have no default and are left out). A training record that
  stores these tells a run made under other library defaults from one made under the current ones.

  Raises:
    ValueError: unknown name (suggests the closest registered names and lists all).
  """
  _entry(name)
  return {k: v for k, v in _hparam_defaults(name).items() if v is not inspect.Parameter.empty}


def _types_of(name) -> dict[str, type]:
  """{hparam: type} of one loss: the default's type; without default the annotation if it is a type, else
  `tuple` (an array-like such as the transition matrix: nested tuples in a config)."""
  params = inspect.signature(_REGISTRY[name].fn).parameters
  types_ = {}
  for hp, default in _hparam_defaults(name).items():
    annotation = params[hp].annotation if hp in params else None
    # Annotations may be strings (`from __future__ import annotations`): the simple types by name.
    annotation = _ANNOTATION_TYPES.get(annotation, annotation) if isinstance(annotation, str) else annotation
    if default is not inspect.Parameter.empty:
      types_[hp] = type(default)
    elif isinstance(annotation, type) and annotation is not inspect.Parameter.empty:
      types_[hp] = annotation
    else:
      types_[hp] = tuple
  return types_


def hparam_types() -> dict[str, type]:
  """{hparam: Python type} over all registered losses (e.g. for typed config placeholders).

  The type is that of the default; a hyperparameter without default is its annotated type, or else an
  array-like (the transition matrix), reported as `tuple` (nested tuples are accepted). Losses registered
  with `register` are included from the moment they are registered (so register before building a config
  from these types, e.g. `configs.default.loss_config`).
  """
  types_: dict[str, type] = {}
  for name in _REGISTRY:
    for hp, typ in _types_of(name).items():
      if types_.setdefault(hp, typ) is not typ:
        raise TypeError(
          f"hyperparameter {hp!r} has type {typ.__name__} in {name} but "
          f"{types_[hp].__name__} elsewhere; registered losses must agree"
        )
  return types_


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


def _check_type(name, hp, value, typ):
  """`value` (frozen) as type `typ`: ints are accepted (and converted) for floats, nothing else is converted."""
  if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  if typ is int and isinstance(value, int) and not isinstance(value, bool):
    return value
  if typ in (str, bool) and isinstance(value, typ):
    return value
  if typ not in _HPARAM_TYPES:  # array-like (required) hyperparameters: checked by the loss itself
    return value
  expected = {float: "a float (or int)", int: "an int", str: "a str", bool: "a bool"}[typ]
  raise TypeError(f"hyperparameter {hp}={value!r} of loss {name!r} must be {expected}; got {type(value).__name__}")


class Loss:
  """A registered loss with its hyperparameters bound; call it like the loss function.

  ``help(loss)`` and ``loss.__doc__`` show the loss function's own docstring, headed by the bound
  hyperparameters. Frozen and compared by value: two `get` calls with equal hyperparameters give equal
  objects with equal hashes (arrays compare by content), so a Loss can be a static jit argument or a
  cache key.

  Attributes:
    name: the registry name.
    hparams: read-only mapping of every hyperparameter with its value (defaults filled in, arrays as
      nested tuples), including label_smoothing and training-only ones.
    uses_example_weights: whether calls accept per-example `weights` (truncated Lq).
    uses_batch_statistics: whether the loss of one example depends on the rest of the batch (dynamic
      clipping); in data-parallel code pass `axis_name` so the statistics are global.
    uses_epoch: whether the loss follows a schedule of the epoch (pass `epoch` when training).
    example_state_keys: names of the per-example state it keeps in training (see `protocol.Training`);
      a call must pass that state (``example_state``).
    num_views: M, the number of augmented views of each example the loss takes: 1 for almost every loss
      (logits [..., K]); for M > 1 (GJS) pass the logits of M independently augmented copies of the batch
      stacked on a new leading axis, [M, ..., K], with the labels and `where` of one copy.
  """

  def __init__(self, name: str, hparams: Mapping[str, Any]):
    entry = _entry(name)
    fn = entry.fn
    frozen = {k: _freeze(v) for k, v in hparams.items()}
    setattr_ = object.__setattr__
    setattr_(self, "name", name)
    setattr_(self, "hparams", types.MappingProxyType(frozen))
    setattr_(self, "_key", (name, tuple(sorted(frozen.items()))))
    setattr_(self, "_fn", fn)
    setattr_(self, "_training", entry.training)
    setattr_(self, "_label_smoothing", 0.0 if _accepts(fn, LABEL_SMOOTHING) else frozen[LABEL_SMOOTHING])
    extra = set(entry.training.extra_hparams)
    setattr_(
      self,
      "_fn_hparams",
      {k: v for k, v in frozen.items() if k not in extra and (k != LABEL_SMOOTHING or _accepts(fn, k))},
    )
    # Function-like attributes, so help(), IPython's `?` and documentation tools describe the loss itself.
    setattr_(self, "__name__", name)
    setattr_(self, "__qualname__", name)
    setattr_(self, "__module__", getattr(fn, "__module__", __name__))
    setattr_(self, "__signature__", _CALL_SIGNATURE)
    setattr_(self, "__doc__", self._doc())

  def _doc(self) -> str:
    bound = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
    head = (
      f"{self!r}: `{self._fn.__module__}.{self._fn.__name__}` with {bound or 'no hyperparameters'} bound.\n\n"
      "Call it as loss(logits, labels, *, where=None, axis_name=None, epoch=None, example_state=None, "
      "step_state=None, learning_rate=None) -> "
      "per-example losses; `call_with_aux` also returns the aux dict. The loss function's documentation "
      "follows.\n\n"
    )
    return head + (inspect.getdoc(self._fn) or "")

  def __setattr__(self, key, value):
    raise AttributeError(f"Loss is frozen; use robust_losses.get({self.name!r}, ...) for other hyperparameters")

  def __get__(self, obj, objtype=None):
    # A Loss stored as a class attribute stays itself (as a function would not: it binds). This also makes
    # pydoc treat it as a routine, so help(loss) shows its own __doc__ and signature, not the class's.
    return self

  def __reduce__(self):
    return (_rebuild, (self.name, dict(self.hparams)))

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
    return self._training.example_state_keys()

  @property
  def uses_step_state(self) -> bool:
    """Whether the loss, with these hyperparameters, keeps a state across training steps (see
    `protocol.StepState`): pass ``step_state=`` and read the new state from ``aux["step_state"]``."""
    return self.init_step_state(2) is not None

  @property
  def uses_learning_rate(self) -> bool:
    """Whether the loss takes the optimizer's learning rate of the step (``learning_rate=``; OGC)."""
    return _accepts(self._fn, "learning_rate")

  def init_step_state(self, num_classes: int):
    """The initial step state (a pytree of fixed shapes), or None for a loss without one."""
    spec = self._training.step_state
    return None if spec is None else spec.init(self.hparams, num_classes)

  @property
  def num_views(self) -> int:
    views = self._training.num_views
    return 1 if views is None else int(views(self.hparams))

  def _labels(self, logits, labels, where):
    """(labels, where) as the loss function gets them: with label smoothing, smoothed one-hot labels, and the
    examples that negative class ids ignore moved into `where` (a one-hot row cannot carry that mark)."""
    if not self._label_smoothing:
      return labels, where
    if self.num_views > 1:  # the labels are those of one view
      logits = logits[0]
    shaped, prepared, where = _utils.prepare(logits, labels, where)
    if _utils.is_ids(shaped, prepared):
      onehot = jax.nn.one_hot(prepared, shaped.shape[-1], dtype=shaped.dtype)
      if not _utils.is_concrete(labels):  # an id >= K under jit: a NaN row, so that example's loss is NaN
        onehot = jnp.where((jnp.asarray(labels) >= shaped.shape[-1])[..., None], jnp.nan, onehot)
      prepared = onehot
    return optax.smooth_labels(prepared, self._label_smoothing), where

  def _call(
    self,
    logits,
    labels,
    where,
    axis_name,
    weights,
    epoch,
    example_state,
    return_aux,
    step_state=None,
    learning_rate=None,
  ):
    kwargs = dict(self._fn_hparams, where=where)
    spec = self._training.step_state
    if step_state is not None:
      if spec is None:
        raise ValueError(f"{self.name} keeps no step state; only losses with uses_step_state=True take step_state")
      kwargs[spec.argument] = step_state
    if learning_rate is not None and self.uses_learning_rate:
      kwargs["learning_rate"] = learning_rate
    if weights is not None:
      if not self.uses_example_weights:
        raise ValueError(
          f"{self.name} does not take per-example weights; only losses with "
          f"uses_example_weights=True do (truncated_generalized_cross_entropy)"
        )
      kwargs["weights"] = weights
    keys = self.example_state_keys
    for key, rows in (example_state or {}).items():
      if key not in keys:
        raise ValueError(f"{self.name} keeps no example state {key!r}; its state keys are {list(keys)}")
      kwargs[key] = rows
    missing = [k for k in keys if k not in kwargs]
    if missing:
      raise ValueError(
        f"{self.name} keeps per-example state {list(keys)} and was called without {missing}: pass "
        f"example_state={{key: the batch's rows}}, the rows of loss.init_example_state(num_examples, "
        "num_classes) kept by the training loop (see robust_losses.protocol); without its state the loss "
        "would silently be another method"
      )
    # Per-example losses need no cross-device communication, so axis_name is simply not passed to them;
    # likewise the epoch goes only to losses with a schedule.
    if self.uses_batch_statistics:
      kwargs["axis_name"] = axis_name
    if self.uses_epoch and epoch is not None:
      kwargs["epoch"] = epoch
    labels, kwargs["where"] = self._labels(logits, labels, where)
    if return_aux and _accepts(self._fn, "return_aux"):
      losses, aux = self._fn(logits, labels, return_aux=True, **kwargs)
      if spec is not None and spec.argument != "step_state" and spec.argument in aux:
        aux = dict(aux)
        aux["step_state"] = aux.pop(spec.argument)  # the loop reads one name, whatever the loss calls it
      return losses, aux
    losses = self._fn(logits, labels, **kwargs)
    return (losses, {}) if return_aux else losses

  def __call__(
    self,
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: Optional[ArrayLike] = None,
    axis_name: Optional[AxisName] = None,
    weights: Optional[ArrayLike] = None,
    epoch: Optional[ArrayLike] = None,
    example_state: Optional[Mapping[str, ArrayLike]] = None,
    step_state: Any = None,
    learning_rate: Optional[ArrayLike] = None,
  ) -> jax.Array:
    """Per-example losses [...] for logits and class ids [...] or one-hot/soft labels [..., K]."""
    return self._call(logits, labels, where, axis_name, weights, epoch, example_state, False, step_state, learning_rate)

  def call_with_aux(
    self,
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: Optional[ArrayLike] = None,
    axis_name: Optional[AxisName] = None,
    weights: Optional[ArrayLike] = None,
    epoch: Optional[ArrayLike] = None,
    example_state: Optional[Mapping[str, ArrayLike]] = None,
    step_state: Any = None,
    learning_rate: Optional[ArrayLike] = None,
  ) -> tuple[jax.Array, dict[str, Any]]:
    """(per-example losses, aux). aux holds {'clipped', 'unclipped'} (float32 [...]) for the dynamic-
    clipping losses, 'example_state' (the batch's updated rows) for losses that update their state,
    'step_state' (the new step state) when `step_state` was passed, and is {} otherwise."""
    return self._call(logits, labels, where, axis_name, weights, epoch, example_state, True, step_state, learning_rate)

  # ---- the training protocol (see `protocol.Training`)
  def init_example_state(self, num_examples: int, num_classes: int) -> dict[str, np.ndarray]:
    """{key: [num_examples, ...]} initial per-example state ({} for losses without state)."""
    if self._training.example_state is None:
      return {}
    rows = self._training.example_state(num_classes)
    return {k: np.broadcast_to(np.asarray(v), (num_examples, *np.shape(v))).copy() for k, v in rows.items()}

  def refresh_due(self, epoch: int) -> bool:
    """Whether the loop recomputes the example state with `refresh` at the start of `epoch` (0-based)."""
    return self._training.refresh_due is not None and bool(self._training.refresh_due(epoch, self.hparams))

  def refresh(self, logits: ArrayLike, labels: ArrayLike) -> dict[str, jax.Array]:
    """New example-state rows from eval-mode logits of the examples, with the labels the loss trains on
    (label smoothing included)."""
    return self._training.refresh(logits, self._labels(logits, labels, None)[0], self.hparams)

  def check_training(self, num_epochs: int) -> None:
    """Raises ValueError when a schedule of this loss cannot act within `num_epochs` epochs."""
    if self._training.check is not None:
      self._training.check(self.hparams, num_epochs)


# The signature a Loss shows (help, IPython): its __call__'s, without self.
_CALL_SIGNATURE = inspect.signature(Loss.__call__).replace(
  parameters=[p for p in inspect.signature(Loss.__call__).parameters.values() if p.name != "self"]
)


def _rebuild(name, hparams):
  return get(name, **hparams)


def get(name: str, **hparams) -> Loss:
  """The loss `name` with `hparams` bound (defaults for the rest); validated now, outside jit.

  Raises:
    ValueError: unknown name (suggests the closest registered names), unknown hyperparameter (suggests
      the closest and lists the loss's valid ones), missing required hyperparameter, or a value out of
      range (names value and valid range).
    TypeError: a hyperparameter of the wrong type (names it and the expected type; ints are accepted
      for floats).
  """
  entry = _entry(name)
  defaults = _hparam_defaults(name)
  unknown = sorted(set(hparams) - set(defaults))
  if unknown:
    hints = {u: difflib.get_close_matches(u, list(defaults), n=1, cutoff=0.6) for u in unknown}
    hint = "".join(f"; {u!r}: did you mean {h[0]!r}?" for u, h in hints.items() if h)
    raise ValueError(
      f"unknown hyperparameter(s) {unknown} for loss {name!r}{hint}; valid hyperparameters are {sorted(defaults)}"
    )
  resolved = {**defaults, **hparams}
  missing = sorted(k for k, v in resolved.items() if v is inspect.Parameter.empty)
  if missing:
    raise ValueError(f"loss {name!r} needs hyperparameter(s) {missing}; valid hyperparameters are {sorted(defaults)}")
  expected = _types_of(name)
  resolved = {k: _check_type(name, k, _freeze(v), expected[k]) if k in hparams else v for k, v in resolved.items()}
  # Negative values are negative label smoothing (NLS; Wei et al., ICML 2022): optax.smooth_labels computes
  # (1 - r) e_y + r / K for any r, which is exactly the official loss_gls target.
  _utils.check_range(LABEL_SMOOTHING, resolved[LABEL_SMOOTHING], hi=1.0, hi_open=True)
  for key in entry.training.extra_hparams:
    _utils.check_int(key, resolved[key], 1 if key.endswith("every_epochs") else 0)
  loss = Loss(name, resolved)
  # Abstract evaluation runs every Python-level hyperparameter check of the loss without computing
  # anything, so a bad value fails here rather than at the first training step.
  num_classes = np.shape(resolved["transition_matrix"])[-1] if "transition_matrix" in resolved else 3
  _abstract_call(loss, max(num_classes, 2))
  return loss


def _abstract_call(loss: Loss, num_classes: int, ids: bool = False):
  """Shapes of `loss` on a batch of 2 (one-hot labels, or class ids), called as a training loop calls it:
  with its per-example state and an epoch where it takes them."""
  spec = jax.ShapeDtypeStruct((2, num_classes), jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.int32) if ids else spec
  if loss.num_views > 1:  # the logits of M views stacked on a leading axis
    spec = jax.ShapeDtypeStruct((loss.num_views, *spec.shape), spec.dtype)
  state = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in loss.init_example_state(2, num_classes).items()}
  call = {"epoch": 0} if loss.uses_epoch else {}
  return jax.eval_shape(lambda z, y, s: loss(z, y, example_state=s or None, **call), spec, labels, state)


def register(
  fn: Callable,
  name: Optional[str] = None,
  *,
  training: Optional[protocol.Training] = None,
  overwrite: bool = False,
) -> Callable:
  """Registers a loss function under `name` (default ``fn.__name__``), so `get`, `names`,
  `hparam_types` and `required_hparams` know it and configs and sweeps can pick it by name.

  The contract, checked here:

  * ``fn(logits, labels, *, <hyperparameters>, where=None, ...)``: two positional parameters (logits
    [..., K] and labels: class ids [...] or one-hot/soft [..., K]) and everything else keyword-only; no
    ``*args``/``**kwargs``. It returns per-example losses of shape ``logits.shape[:-1]`` with no reduction.
  * ``where`` (required): a per-example bool mask [...]; False examples get loss 0 and zero gradient.
  * Optional call arguments, recognised by name: ``axis_name`` (the loss uses batch statistics; compute
    them over that mapped axis), ``epoch`` (the loss follows a schedule of the epoch; the loop passes
    epochs completed), ``weights`` (per-example weights), ``return_aux`` (``(losses, aux dict)`` when
    True), and one keyword argument per key of ``training.example_state`` (that state's batch rows).
    Each must default to None (``return_aux`` to False).
  * Every other keyword-only parameter is a hyperparameter: with a default of type float, int, str or
    bool (the types a config can hold), or without default for a required input the caller provides by
    name (e.g. a transition matrix). A hyperparameter name used by other registered losses must have the
    same type there. ``label_smoothing`` is added unless the function takes it itself.
  * ``training``: a `protocol.Training` record if the loss needs per-example state or schedule checks.

  Configs read the hyperparameter names and types when they are built (`configs.default.loss_config`
  makes a placeholder for each name in `hparam_types()`): register a loss before building such a config.

  Args:
    fn: the loss function.
    name: registry name; default ``fn.__name__``.
    training: what the loss needs from a training loop (see `robust_losses.protocol`).
    overwrite: replace a loss already registered under `name` (built-in or not); otherwise that is an
      error.

  Returns:
    `fn`, unchanged (so ``register`` can decorate).

  Raises:
    ValueError: a name already registered (without ``overwrite``) or a signature that breaks the
      contract (names the parameter and the rule).
    TypeError: `fn` not callable, a hyperparameter default of another type, or a type that disagrees
      with another registered loss.
  """
  if not callable(fn):
    raise TypeError(f"register: fn must be a callable loss function; got {fn!r}")
  name = fn.__name__ if name is None else name
  if not isinstance(name, str) or not name:
    raise ValueError(f"register: name must be a non-empty string; got {name!r}")
  if name in _REGISTRY and not overwrite:
    kind = "a built-in loss" if _REGISTRY[name].builtin else "a loss registered earlier"
    raise ValueError(f"register: {name!r} is already {kind}; pass overwrite=True to replace it, or another name")
  training = protocol.NO_TRAINING if training is None else training
  if not isinstance(training, protocol.Training):
    raise TypeError(f"register: training must be a robust_losses.protocol.Training or None; got {training!r}")
  _check_contract(fn, name, training)
  previous = _REGISTRY.get(name)
  _REGISTRY[name] = _Entry(fn, training, builtin=False)
  try:
    hparam_types()  # types must agree with every other registered loss
    if not required_hparams(name):
      loss = Loss(name, _hparam_defaults(name))
      for ids in (True, False):
        out = _abstract_call(loss, 3, ids)
        if getattr(out, "shape", None) != (2,):
          raise ValueError(
            f"register: {name} must return per-example losses of shape logits.shape[:-1]; for logits of "
            f"shape (2, 3) it returned {jax.tree.map(lambda a: a.shape, out)}"
          )
  except Exception:
    if previous is None:
      del _REGISTRY[name]
    else:
      _REGISTRY[name] = previous
    raise
  return fn


def _check_contract(fn, name, training):
  try:
    params = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError) as e:
    raise ValueError(f"register: cannot read the signature of {name}: {e}") from None
  kind = inspect.Parameter
  positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
  if len(positional) != 2 or any(p.kind in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD) for p in params):
    raise ValueError(
      f"register: {name} must be fn(logits, labels, *, <hyperparameters>, where=None, ...): exactly two "
      f"positional parameters, the rest keyword-only, no *args/**kwargs; got {inspect.signature(fn)}"
    )
  keyword = {p.name: p for p in params if p.kind is kind.KEYWORD_ONLY}
  if "where" not in keyword:
    raise ValueError(f"register: {name} must take the per-example mask as a keyword-only `where=None`")
  state_keys = set(training.example_state_keys())
  if training.step_state is not None:
    arg = training.step_state.argument
    if arg not in keyword or "return_aux" not in keyword:
      raise ValueError(
        f"register: {name} keeps a step state: it needs keyword-only parameters {arg!r} (the state) and "
        f"`return_aux` (the new state is returned as aux[{arg!r}])"
      )
    state_keys.add(arg)
  for key in state_keys:
    if key not in keyword:
      raise ValueError(f"register: {name} keeps example state {key!r} but has no keyword-only parameter {key!r}")
  for arg in (_CALL_ARGS | state_keys) & set(keyword):
    default = keyword[arg].default
    if not (default is None or (arg == "return_aux" and default is False)):
      raise ValueError(f"register: {name}'s call argument {arg!r} must default to None; got {default!r}")
  clash = set(training.extra_hparams) & set(keyword)
  if clash:
    raise ValueError(f"register: training.extra_hparams {sorted(clash)} clash with parameters of {name}")
  for hp, p in keyword.items():
    if hp in _CALL_ARGS or hp in state_keys or p.default is kind.empty:
      continue
    numbers = isinstance(p.default, tuple) and all(type(v) in (float, int) for v in p.default)
    if type(p.default) not in _HPARAM_TYPES and not numbers:
      raise TypeError(
        f"register: hyperparameter {hp}={p.default!r} of {name} must default to a float, int, str or bool, "
        f"or a tuple of numbers (a type a config can hold); got {type(p.default).__name__}"
      )


_BUILTINS = (
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
  negative.active_negative_loss_entropy_regularized,
  asymmetric.asymmetric_generalized_cross_entropy,
  asymmetric.asymmetric_unhinged_loss,
  asymmetric.asymmetric_exponential_loss,
  asymmetric.asymmetric_norm_loss,
  asymmetric.nce_asymmetric_loss,
  asymmetric.asymmetric_mean_squared_error,
  asymmetric.joint_asymmetric_loss,
  epsilon_softmax.epsilon_softmax_cross_entropy,
  epsilon_softmax.epsilon_softmax_cross_entropy_mae,
  divergence.ldr_kl_loss,
  divergence.jensen_shannon_divergence,
  divergence.generalized_jensen_shannon_divergence,
  taylor.taylor_cross_entropy,
  logitclip.logit_clipping,
  phuber.partially_huberised_cross_entropy,
  phuber.partially_huberised_generalized_cross_entropy,
  ogc.optimized_gradient_clipping,
  regularized.early_learning_regularization,
  regularized.sparse_regularization,
)


def _declared_training(fn) -> protocol.Training:
  """The `protocol.Training` record the loss's own module declares for it (its `TRAINING` dict), if any."""
  return getattr(inspect.getmodule(fn), "TRAINING", {}).get(fn.__name__, protocol.NO_TRAINING)


for _fn in _BUILTINS:
  _REGISTRY[_fn.__name__] = _Entry(_fn, _declared_training(_fn), builtin=True)
del _fn


def _check_builtins():
  for loss_name, entry in _REGISTRY.items():
    _check_contract(entry.fn, loss_name, entry.training)


_check_builtins()
