import jax
import jax.numpy as jnp
import optax
from flax import linen as nn  # the model only: robust_losses itself does not need Flax

import robust_losses as rl

logits = jax.random.normal(jax.random.key(0), (3, 10))  # [batch, K] scores from any model
labels = jnp.array([3, 0, 7])  # class ids (or one-hot [3, K])
loss = rl.tamed_cross_entropy(logits, labels, alpha=1.5)  # α = 0 is exactly softmax CE
loss = rl.generalized_cross_entropy(logits, labels, q=0.7)
loss = rl.dynamic_clipping(rl.sigmoid_binary_cross_entropy(logits, labels), statistic="quantile", quantile=0.9)

# By name, from a config (big_vision style): hyperparameters are checked here, outside jit.
loss_fn = rl.get("tamed_cross_entropy", alpha=2.0)
assert loss_fn == rl.get("tamed_cross_entropy", alpha=2.0)  # frozen, equal and hashed by value
print(rl.names())

# A complete Flax/optax training step (the Loss object can be a static jit argument).
model = nn.Dense(10)
x = jax.random.normal(jax.random.key(1), (3, 64))
params = model.init(jax.random.key(2), x)["params"]
tx = optax.adam(1e-2)
opt_state = tx.init(params)


def train_step(params, opt_state, x, y):
  def objective(p):
    logits = model.apply({"params": p}, x)
    return loss_fn(logits, y).mean()

  loss, grads = jax.value_and_grad(objective)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


train_step = jax.jit(train_step)
for step in range(3):
  params, opt_state, loss = train_step(params, opt_state, x, labels)
  print(f"step {step}: loss {loss:.4f}")
