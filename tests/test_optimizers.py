"""Learning-rate schedules and optimizers of experiments/optimizers.py, against values worked out by hand.

Throughout: 10 steps per epoch and a base learning rate of 0.1. "Step s" is the optimizer's step count, so
the update computed at step s uses lr(s); epoch e (1-based) runs steps 10(e-1) .. 10e-1.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from experiments import optimizers

SPE = 10  # steps per epoch
LR = 0.1


def config(**overrides):
  c = default.get_config()
  c.learning_rate = LR
  c.num_epochs = 10
  c.warmup_epochs = 0
  for key, value in overrides.items():
    c[key] = value
  optimizers.validate(c)
  return c


def check(schedule, expected: dict):
  for step, want in expected.items():
    got = float(schedule(jnp.asarray(step, jnp.int32)))  # the optimizer's count is int32
    assert got == pytest.approx(want, rel=1e-5, abs=1e-8), f"step {step}: lr {got}, expected {want}"


def test_constant_without_warmup():
  check(optimizers.learning_rate_fn(config(schedule="constant"), SPE), {0: 0.1, 1: 0.1, 57: 0.1, 99: 0.1})


def test_constant_with_warmup():
  # 2 warm-up epochs = 20 steps, linear from 0: lr(s) = 0.1 * s / 20 for s < 20, then 0.1.
  sched = optimizers.learning_rate_fn(config(schedule="constant", warmup_epochs=2), SPE)
  check(sched, {0: 0.0, 1: 0.005, 10: 0.05, 19: 0.095, 20: 0.1, 21: 0.1, 99: 0.1})


def test_cosine_without_warmup():
  # 100 steps: lr(s) = 0.05 * (1 + cos(pi * s / 100)); reaches 0 at the end of training.
  sched = optimizers.learning_rate_fn(config(schedule="cosine"), SPE)
  check(
    sched,
    {
      0: 0.1,
      25: 0.05 * (1 + math.sqrt(0.5)),
      50: 0.05,
      75: 0.05 * (1 - math.sqrt(0.5)),
      99: 0.05 * (1 - math.cos(math.pi / 100)),
      100: 0.0,
    },
  )


def test_cosine_with_warmup():
  # 20 linear warm-up steps, then the cosine over the remaining 80 steps: lr = 0.05 (1 + cos(pi (s-20)/80)).
  sched = optimizers.learning_rate_fn(config(schedule="cosine", warmup_epochs=2), SPE)
  check(
    sched,
    {
      0: 0.0,
      10: 0.05,
      19: 0.095,
      20: 0.1,  # the peak is the base learning rate
      21: 0.05 * (1 + math.cos(math.pi / 80)),
      60: 0.05,  # halfway through the cosine part
      99: 0.05 * (1 - math.cos(math.pi / 80)),
      100: 0.0,
    },
  )


def test_step_without_warmup():
  # x0.1 at the start of epochs 4 and 7 (boundaries 3 and 6 = after 3 and 6 epochs): steps 30 and 60.
  sched = optimizers.learning_rate_fn(config(schedule="step", lr_boundaries=(3, 6), lr_decay=0.1), SPE)
  check(sched, {0: 0.1, 29: 0.1, 30: 0.01, 31: 0.01, 59: 0.01, 60: 0.001, 61: 0.001, 99: 0.001})


def test_step_with_warmup_keeps_boundaries_counted_from_the_start():
  # Boundaries are epochs from the start of training, not from the end of the warm-up: still steps 30 and 60.
  sched = optimizers.learning_rate_fn(config(schedule="step", lr_boundaries=(3, 6), lr_decay=0.5, warmup_epochs=2), SPE)
  check(
    sched,
    {
      0: 0.0,
      10: 0.05,
      19: 0.095,
      20: 0.1,
      21: 0.1,
      29: 0.1,
      30: 0.05,
      31: 0.05,
      59: 0.05,
      60: 0.025,
      61: 0.025,
      99: 0.025,
    },
  )


def test_step_with_fractional_boundary():
  # Boundary 2.5 epochs = step 25.
  sched = optimizers.learning_rate_fn(config(schedule="step", lr_boundaries=(2.5,), lr_decay=0.2), SPE)
  check(sched, {24: 0.1, 25: 0.02, 26: 0.02})


def test_sgd_applies_the_schedule_step_by_step():
  """The optimizer uses the schedule at its own step count: plain SGD's update is -lr(s) * grad."""
  c = config(
    schedule="step",
    lr_boundaries=(3, 6),
    lr_decay=0.1,
    warmup_epochs=2,
    optimizer="sgd",
    momentum=0.0,
    weight_decay=0.0,
  )
  tx = optimizers.create(c, SPE)
  params = {"w": jnp.zeros(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.5])}
  state = tx.init(params)
  update = jax.jit(tx.update)
  lrs = []
  for _ in range(62):
    updates, state = update(grads, state, params)
    ratio = np.asarray(updates["w"]) / -np.asarray(grads["w"])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    lrs.append(float(ratio[0]))
  expected = {0: 0.0, 10: 0.05, 19: 0.095, 20: 0.1, 29: 0.1, 30: 0.01, 31: 0.01, 59: 0.01, 60: 0.001, 61: 0.001}
  for step, want in expected.items():
    assert lrs[step] == pytest.approx(want, rel=1e-5, abs=1e-8), step


def test_gradient_clipping_and_coupled_weight_decay():
  # clip_by_global_norm(1) then SGD with coupled L2: update = -lr * (g / |g| + wd * w), at a constant lr.
  c = config(schedule="constant", momentum=0.0, weight_decay=0.01, grad_clip_norm=1.0)
  tx = optimizers.create(c, SPE)
  params = {"w": jnp.array([1.0, 2.0])}
  grads = {"w": jnp.array([3.0, 4.0])}  # norm 5
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * (np.array([0.6, 0.8]) + 0.01 * np.array([1.0, 2.0])), rtol=1e-6)


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"schedule": "step", "lr_boundaries": (0,)}, "lr_boundaries"),
    ({"schedule": "step", "lr_boundaries": (10,)}, "lr_boundaries"),  # = num_epochs: never reached
    ({"schedule": "step", "lr_boundaries": ()}, "lr_boundaries"),
    ({"schedule": "linear"}, "schedule='linear' is unknown"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is unknown"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1"),
    ({"momentum": 1.0}, "momentum=1.0"),
  ],
)
def test_validate_rejects(overrides, match):
  c = default.get_config()
  c.num_epochs = 10
  for key, value in overrides.items():
    c[key] = value
  with pytest.raises(ValueError, match=match):
    optimizers.validate(c)
