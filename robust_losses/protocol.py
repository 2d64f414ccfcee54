r"""The loss-state protocol: what a loss needs from a training loop beyond ``(logits, labels)``.

A loss module declares, next to its loss, a `Training` record for every loss that needs more from the loop,
in a module-level dict ``TRAINING = {loss name: Training(...)}``; the registry (`robust_losses.get`) reads
those declarations and exposes them through the `robust_losses.Loss` object, which is all a training loop
uses (``init_example_state``, ``refresh_due``, ``refresh``, ``check_training``, ``example_state_keys``,
``call_with_aux``). The loop never names a loss. This module imports nothing from the library, so loss
modules and the registry can both import it.

What a loss can need, and how it declares it:

* **Per-example state** (``Training.example_state``, ``refresh``, ``refresh_due``): a row per training
  example, indexed by the example's position in the training set, kept by the loop (in its checkpoint,
  replicated identically on every device) and passed to the loss for the batch's examples as keyword
  arguments named by the state's keys. Truncated Lq's pruning weights (recomputed by ``refresh`` from a
  full eval-mode pass over the training set at the epochs where ``refresh_due``) and ELR's target memory
  (updated by the loss itself: it returns the batch's new rows as ``aux["example_state"]`` with
  ``return_aux=True``).
* **A schedule of the epoch**: the loss takes an ``epoch`` call argument (epochs completed, an int scalar
  that may be traced) and needs no entry here; ``Training.check`` rejects a schedule that cannot act
  within the run, and ``extra_hparams`` holds hyperparameters only the loop's hooks read (truncated Lq's
  ``prune_start_epoch``).
* **Several augmented views of each example** (``Training.num_views``): the loss takes the logits of M
  views stacked on a leading axis (GJS).
* **Inputs from the noise model** (the correction losses' ``transition_matrix``): required
  hyperparameters (no default), filled in by name by the loop.

**Per-step state** (``Training.step_state``, a `StepState`): a fixed-size state updated once per
training step from the *global* batch — OGC's queue of recent losses and its threshold, the `LossWindow` of
windowed clipping. An optax-style pair: ``StepState.init(hparams, num_classes)`` builds it (a pytree of
fixed shapes, or None when these hyperparameters need none, e.g. clipping without a window), and the
update is done by the loss itself inside the compiled step: the loop passes the current state as the call
argument ``step_state=`` (the `Loss` object hands it to the loss function under ``StepState.argument``) and
reads the new one from ``aux["step_state"]``, computed from the global batch through ``axis_name``, hence
identical on every device. Losses whose state depends on the optimizer (OGC's target ``1 + lr * epsilon``)
take the call argument ``learning_rate=`` (the learning rate of this step). The loop keeps the state in its
train state next to the per-example ``loss_state`` and checkpoints it; the `Loss` object exposes
``uses_step_state``, ``init_step_state(num_classes)`` and ``uses_learning_rate``.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional


@dataclasses.dataclass(frozen=True)
class StepState:
  """A fixed-size state the loss updates once per training step from the global batch (see the module
  docstring), optax style.

  Attributes:
    init: ``init(hparams, num_classes) -> pytree`` of fixed shapes (float32/int32 leaves), or None when the
      loss with these hyperparameters keeps no step state.
    argument: the keyword argument under which the loss function receives the state, and the key of its aux
      dict under which it returns the new one (``return_aux=True``). The `Loss` object maps both to
      ``step_state``.
  """

  init: Callable[[Mapping[str, Any], int], Any]
  argument: str = "step_state"


@dataclasses.dataclass(frozen=True)
class Training:
  """What a loss needs from a training loop beyond (logits, labels) (see the module docstring).

  Attributes:
    example_state: ``init(num_classes) -> {key: initial row}`` of the per-example state; each key is
      also the keyword argument under which the loss receives the batch's rows. None: no state.
    refresh: ``refresh(logits, labels, hparams) -> {key: new rows}``, new rows for every example from
      eval-mode logits of the whole training set (the labels the loss trains on, label smoothing
      included). None: the loss updates its own rows (returned as ``aux["example_state"]``).
    refresh_due: ``refresh_due(epoch, hparams) -> bool``, whether the loop calls ``refresh`` at the start
      of ``epoch`` (0-based). None: never.
    extra_hparams: ``{name: default}`` of hyperparameters only these hooks read (schedules of the loop);
      they are loss hyperparameters like the others (``get`` takes them, ``Loss.hparams`` lists them).
    check: ``check(hparams, num_epochs)``, raises ValueError for a schedule that cannot act within a run
      of ``num_epochs`` epochs. None: no check.
    num_views: ``num_views(hparams) -> M``, the number of augmented views of each example the loss takes
      (GJS): the loop passes the logits of M independently augmented copies of the batch stacked on a new
      leading axis, ``[M, ..., K]``, with the labels of one copy. None: one view, ``[..., K]``.
    step_state: a `StepState`, the fixed-size state the loss updates every step from the global batch.
      None: no step state.
  """

  example_state: Optional[Callable[[int], Mapping[str, Any]]] = None
  refresh: Optional[Callable[[Any, Any, Mapping[str, Any]], Mapping[str, Any]]] = None
  refresh_due: Optional[Callable[[int, Mapping[str, Any]], bool]] = None
  extra_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check: Optional[Callable[[Mapping[str, Any], int], None]] = None
  num_views: Optional[Callable[[Mapping[str, Any]], int]] = None
  step_state: Optional[StepState] = None

  def example_state_keys(self) -> tuple[str, ...]:
    """Names of the per-example state (the keyword arguments the loss receives its rows under)."""
    return () if self.example_state is None else tuple(self.example_state(2))


NO_TRAINING = Training()


def check_schedule_epoch(name: str, value: int, num_epochs: int, consequence: str, fix: str = "") -> None:
  """Raises ValueError unless the schedule epoch `name`=`value` lies within a run of `num_epochs` epochs;
  `consequence` says what happens otherwise and `fix` (optional) how to fix it (for the message)."""
  if value >= num_epochs:
    raise ValueError(
      f"{name}={value} is out of range for num_epochs={num_epochs}; valid range is [0, {num_epochs - 1}] "
      f"(otherwise {consequence})" + (f". {fix}" if fix else "")
    )
