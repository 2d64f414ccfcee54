"""The ANL/JAL L1 parameter penalty as an optax transformation: its update is the gradient of
weight * sum|theta| added to the loss gradient, before gradient clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import digits
from experiments import optimizers


def test_l1_penalty_adds_the_gradient_of_the_l1_norm():
  params = {"w": jnp.array([[-2.0, 0.0], [0.5, 3.0]]), "b": jnp.array([-1e-3, 1e-3])}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  tx = optimizers.add_l1_penalty(0.01)
  updates, _ = tx.update(grads, tx.init(params), params)
  # torch's d|x|/dx (the official ANL/JAL code) is sign(x), 0 at 0; jax.grad(jnp.abs) gives 1 at 0.
  l1_grad = jax.tree.map(lambda p: 0.01 * np.sign(np.asarray(p)), params)
  jax.tree.map(lambda u, g, l: np.testing.assert_allclose(u, g + l, rtol=1e-7), updates, grads, l1_grad)
  np.testing.assert_array_equal(updates["w"][0, 1], np.float32(0.1))  # sign(0) = 0, as torch's abs


def test_l1_weight_decay_config_is_applied_before_clipping():
  c = digits.get_config()
  c.l1_weight_decay, c.weight_decay, c.grad_clip_norm, c.momentum = 1.0, 0.0, 1e-3, 0.0
  c.schedule, c.learning_rate = "constant", 1.0
  tx = optimizers.create(c, steps_per_epoch=10)
  params = {"w": jnp.array([2.0, -2.0, 0.0])}
  zero = {"w": jnp.zeros(3)}
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero loss gradient: the update is -lr * clip(sign(theta)) with the clip at global norm 1e-3.
  expected = -1e-3 * np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)
  assert optax.tree.norm(updates) <= 1e-3 * (1 + 1e-6)
