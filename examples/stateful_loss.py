"""A stateful loss in your own loop, through the protocol every `rl.Loss` exposes.

Two losses keep per-example state that belongs to the training set, not to the model: ELR's running targets
(updated by the loss on every batch) and truncated Lq's pruning weights (recomputed from a pass of the model
over the whole training set at scheduled epochs). The loop below never names either loss: it asks the `Loss`
object which state it keeps (`init_example_state`), hands each batch its rows (`example_state=`), writes back
the rows the loss returns (`call_with_aux`), and refreshes the state when the loss says so (`refresh_due`,
`refresh`). Digits with 40% symmetric noise, an MLP, clean test labels. Run:
  python examples/stateful_loss.py
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import robust_losses as rl  # noqa: E402

NOISE_RATE, EPOCHS, BATCH, SEED = 0.4, 40, 64, 0
LOSSES = {
  "ELR": ("early_learning_regularization", {"beta": 0.7, "lam": 3.0}),
  "truncated Lq": ("truncated_generalized_cross_entropy", {"q": 0.7, "k": 0.5, "prune_start_epoch": 10}),
}


def noisy_digits(noise_rate, seed):
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
    return nn.Dense(10)(nn.relu(nn.Dense(256)(x)))


def train(loss: rl.Loss, x, y, seed):
  loss.check_training(num_epochs=EPOCHS)  # a schedule that cannot act within the run is an error
  model, tx = MLP(), optax.adam(1e-3)
  params = model.init(jax.random.key(seed), x[:1])["params"]
  opt_state = tx.init(params)
  state = loss.init_example_state(num_examples=len(y), num_classes=10)  # {key: [N, ...]}: the loop keeps it
  print(f"{loss.name}: example state {sorted(state)}")

  @jax.jit
  def step(params, opt_state, xb, yb, rows, epoch):
    kwargs = {"example_state": rows} if rows else {}
    if loss.uses_epoch:
      kwargs["epoch"] = epoch

    def objective(p):
      losses, aux = loss.call_with_aux(model.apply({"params": p}, xb), yb, **kwargs)
      return losses.mean(), aux

    (value, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, aux.get("example_state", {})

  steps = len(y) // BATCH
  for epoch in range(EPOCHS):
    if loss.refresh_due(epoch):  # truncated Lq: new weights from the model's predictions on every example
      state = {k: np.asarray(v) for k, v in loss.refresh(model.apply({"params": params}, x), y).items()}
      print(f"  epoch {epoch}: refreshed, {int(state['weights'].sum())} of {len(y)} examples kept")
    order = np.random.default_rng(seed + epoch).permutation(len(y))
    for i in range(steps):
      index = order[i * BATCH : (i + 1) * BATCH]
      rows = {k: v[index] for k, v in state.items()}
      params, opt_state, _, new_rows = step(params, opt_state, x[index], y[index], rows, epoch)
      for k, v in new_rows.items():  # ELR: the batch's updated targets go back into the memory
        state[k][index] = np.asarray(v)
  return model, params


def main():
  x, y, x_test, y_test = noisy_digits(NOISE_RATE, SEED)
  for label, (name, hparams) in LOSSES.items():
    model, params = train(rl.get(name, **hparams), x, y, SEED)
    accuracy = float(jnp.mean(jnp.argmax(model.apply({"params": params}, x_test), -1) == y_test))
    print(f"{label:>12}: test accuracy {accuracy:.3f} after {EPOCHS} epochs")


if __name__ == "__main__":
  main()
