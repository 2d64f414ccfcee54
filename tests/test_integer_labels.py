"""Integer class ids and one-hot labels give the same losses and gradients, for every registered loss; the
label rule is shape-based; forward correction builds no [B, K, K] array."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl

K = 5
# Asymmetric (T != T.T) and with distinct entries, so a class-id path that reads a row of T (or of its
# inverse) where the one-hot path reads a column gives other numbers. With the symmetric matrix this test
# used before, forward correction's class-id path passed with ``t[labels]`` in place of ``t.T[labels]``
# (planted, seen to pass there and fail here, reverted).
T = np.array(
  [
    [0.60, 0.25, 0.10, 0.05, 0.00],
    [0.05, 0.70, 0.15, 0.00, 0.10],
    [0.00, 0.10, 0.55, 0.30, 0.05],
    [0.20, 0.00, 0.05, 0.65, 0.10],
    [0.10, 0.05, 0.00, 0.15, 0.70],
  ]
)


def _required(name):
  return {k: (T if k == "transition_matrix" else 0.2) for k in rl.required_hparams(name)}


def _loop_kwargs(loss, batch_shape):
  """What a training loop passes: the epoch, and state rows (ELR targets that are not all zero)."""
  kwargs = {"epoch": 5} if loss.uses_epoch else {}  # past the clipping losses' default warm-up: they clip
  state = loss.init_example_state(int(np.prod(batch_shape)), K)
  if "targets" in state:
    state["targets"] = np.full_like(state["targets"], 0.15)
  if state:
    kwargs["example_state"] = {k: v.reshape(*batch_shape, *v.shape[1:]) for k, v in state.items()}
  return kwargs


# Logits up to ~|9|: the two label forms differ only in float32 rounding order. log p_y is z_y - lse for ids
# and (z - m) - log(sum e^(z - m)) for one-hot; each is a few roundings of values <= ~10, i.e. absolute error
# <= ~4 * 2**-24 * 10 = 2.4e-6, and the losses are smooth in log p with slopes of order 1-10 here.
RTOL, ATOL = 1e-5, 2.5e-5


@pytest.mark.parametrize("name", rl.names())
def test_integer_and_one_hot_labels_agree_in_values_and_gradients(name):
  loss = rl.get(name, **_required(name))
  views = () if loss.num_views == 1 else (loss.num_views,)  # GJS: the views' logits stacked in front
  logits = 3.0 * jax.random.normal(jax.random.key(0), (*views, 3, 4, K))
  ids = jax.random.randint(jax.random.key(1), (3, 4), 0, K)
  onehot = jax.nn.one_hot(ids, K)

  kwargs = _loop_kwargs(loss, (3, 4))

  def value_and_grad(labels):
    return (
      jax.jit(jax.value_and_grad(lambda z: loss(z, labels, axis_name=None, **kwargs).sum()))(logits),
      loss(logits, labels, **kwargs),
    )

  (total_i, grad_i), per_i = value_and_grad(ids)
  (total_o, grad_o), per_o = value_and_grad(onehot)
  assert per_i.shape == (3, 4) and per_i.dtype == jnp.float32
  np.testing.assert_allclose(per_i, per_o, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(grad_i, grad_o, rtol=RTOL, atol=ATOL)
  assert np.isfinite(np.asarray(grad_i)).all()
  # Masks work the same way with ids (masked examples: 0 loss, 0 gradient).
  where = np.array([[True, False, True, True]] * 3)
  masked = loss(logits, ids, where=where, **kwargs)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)


def test_label_forms_are_told_apart_by_shape():
  logits = jnp.zeros((2, K))
  with pytest.raises(ValueError, match=r"class ids and must have an integer dtype; got float32"):
    rl.softmax_cross_entropy(logits, jnp.array([0.0, 1.0]))
  with pytest.raises(
    ValueError,
    match=r"integer class ids of shape logits.shape\[:-1\] = \(2,\) or one-hot/soft "
    r"labels of shape logits.shape = \(2, 5\); got \(3,\)",
  ):
    rl.softmax_cross_entropy(logits, jnp.array([0, 1, 2]))
  # Integer one-hot arrays with the shape of logits are one-hot labels.
  np.testing.assert_allclose(
    rl.softmax_cross_entropy(logits, jnp.eye(K, dtype=jnp.int32)[:2]),
    rl.softmax_cross_entropy(logits, jnp.array([0, 1])),
  )


def test_integer_labels_are_optax_integer_cross_entropy_for_tce_at_alpha_zero():
  import optax

  logits = 4.0 * jax.random.normal(jax.random.key(2), (64, 10))
  ids = jax.random.randint(jax.random.key(3), (64,), 0, 10)
  np.testing.assert_array_equal(
    rl.tamed_cross_entropy(logits, ids, alpha=0.0), optax.losses.softmax_cross_entropy_with_integer_labels(logits, ids)
  )


def _largest_intermediate(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  sizes = []

  def walk(jp):
    for eqn in jp.eqns:
      sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  return max(sizes)


@pytest.mark.parametrize("form", ["ids", "onehot"])
def test_forward_correction_memory_is_linear_in_batch_times_classes(form):
  b, k = 64, 100
  t = np.full((k, k), 0.4 / (k - 1)) + np.eye(k) * (0.6 - 0.4 / (k - 1))
  logits = jnp.zeros((b, k))
  ids = jnp.arange(b) % k
  labels = ids if form == "ids" else jax.nn.one_hot(ids, k)
  fn = jax.grad(lambda z: rl.forward_corrected_cross_entropy(z, labels, transition_matrix=t).sum())
  # O(BK + K^2): no intermediate of B*K*K = 640,000 elements (the old logsumexp over [B, K, K]).
  assert _largest_intermediate(fn, logits) <= max(b * k, k * k)
