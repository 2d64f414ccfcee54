"""robust_losses in your own Flax + optax training loop.

A small MLP on scikit-learn's bundled digits (no download) whose training labels carry 40% synthetic
symmetric noise, trained with three losses picked by name from the registry: cross entropy, Tamed CE and
generalized CE. The labels are integer class ids; the test labels are clean. Run:
  python examples/own_training_loop.py
"""

import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import robust_losses as rl  # noqa: E402

NOISE_RATE, EPOCHS, BATCH, SEED = 0.4, 40, 64, 0
LOSSES = {  # the name and hyperparameters could come from a config file
  "CE": ("softmax_cross_entropy", {}),
  "TCE alpha=2": ("tamed_cross_entropy", {"alpha": 2.0}),
  "GCE q=0.7": ("generalized_cross_entropy", {"q": 0.7}),
}


def digits_with_symmetric_noise(noise_rate, seed):
  """Train/test split of the 1797 digits; a `noise_rate` share of the training labels, picked at random,
  is moved to another class chosen uniformly."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(y))
  train, test = order[:1257], order[1257:]
  noisy = y[train].copy()
  flip = rng.choice(len(train), round(noise_rate * len(train)), replace=False)
  noisy[flip] = (noisy[flip] + rng.integers(1, 10, len(flip))) % 10
  print(f"{np.mean(noisy != y[train]):.1%} of {len(train)} training labels flipped; {len(test)} clean test examples")
  return x[train], noisy.astype(np.int32), x[test], y[test].astype(np.int32)


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(256)(x))
    x = nn.relu(nn.Dense(256)(x))
    return nn.Dense(10)(x)


def train(loss_fn, x_train, y_train, seed):
  model, tx = MLP(), optax.adam(1e-3)
  params = model.init(jax.random.key(seed), x_train[:1])["params"]
  steps = len(y_train) // BATCH

  @jax.jit
  def run_epoch(params, opt_state, key):
    batches = jax.random.permutation(key, len(y_train))[: steps * BATCH].reshape(steps, BATCH)

    def step(state, idx):
      params, opt_state = state

      def objective(p):
        return loss_fn(model.apply({"params": p}, x_train[idx]), y_train[idx]).mean()

      loss, grads = jax.value_and_grad(objective)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, losses.mean()

  opt_state = tx.init(params)
  for epoch in range(EPOCHS):
    params, opt_state, _ = run_epoch(params, opt_state, jax.random.fold_in(jax.random.key(seed), epoch))
  return model, params


def main():
  x_train, y_train, x_test, y_test = digits_with_symmetric_noise(NOISE_RATE, SEED)
  for label, (name, hparams) in LOSSES.items():
    start = time.perf_counter()
    loss_fn = rl.get(name, **hparams)
    model, params = train(loss_fn, jnp.asarray(x_train), jnp.asarray(y_train), SEED)
    predictions = jnp.argmax(model.apply({"params": params}, x_test), axis=-1)
    accuracy = float(jnp.mean(predictions == y_test))
    print(f"{label:>12}: test accuracy {accuracy:.3f} after {EPOCHS} epochs ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
