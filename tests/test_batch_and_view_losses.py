"""Losses that see more than one example's logits: ANL-CE-ER's batch entropy over the global batch (1 vs 4
devices, masking, the trainer's gradient), and GJS's views axis (its contract, JS as its one-view case, the
registry's `num_views`). Values against the official code are in test_official_fixtures.py."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import robust_losses as rl

K = 5
B = 16  # global batch: 4 examples per device on the 4 simulated devices of conftest
FEATURES = 3
# psum adds the per-device partial sums in another order than one sum over the batch: a few ulp of each
# per-class sum. In R = log K + sum_c pbar_c log pbar_c they meet the cancellation against log K (<= 1.7
# here), so about 1e-6 absolute; values are ~1-10. Gradients are sums of as many terms, same order.
RTOL, ATOL = 1e-5, 1e-6
ER = "active_negative_loss_entropy_regularized"
GJS = "generalized_jensen_shannon_divergence"


def _batch(seed=0, replicas=None):
  lead = () if replicas is None else (replicas,)
  kx, kw, ky = jax.random.split(jax.random.key(seed), 3)
  x = np.asarray(jax.random.normal(kx, (B, FEATURES)))
  w = np.asarray(2.0 * jax.random.normal(kw, (*lead, FEATURES, K)))
  ids = np.asarray(jax.random.randint(ky, (*lead, B), 0, K))
  # Padding in the middle of device 1 and at the end of device 3, with garbage inputs: if these examples
  # entered pbar, the kept examples' losses would change.
  where = np.ones((*lead, B), bool)
  where[..., [5, 6, 15]] = False
  x_padded = x.copy()
  x_padded[[5, 6, 15]] = 50.0
  return x_padded, w, ids, where


def _mesh():
  # Auto axis types, as experiments/train_lib.make_mesh builds the training mesh.
  return jax.make_mesh((4,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))


def _single_device(loss, x, w, ids, where):
  def mean(w):
    losses = loss(x @ w, ids, where=where)
    return jnp.mean(losses), losses

  (_, losses), grad = jax.jit(jax.value_and_grad(mean, has_aux=True))(w)
  return losses, grad


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("hparams", [{}, {"alpha": 10.0, "beta": 1.0, "lam": 0.01}], ids=["cifar10", "cifar100"])
def test_anl_ce_er_on_4_devices_equals_one_device_values_and_trainer_gradient(hparams, masked):
  # The trainer's step (experiments/train_lib.py): params cast to varying, the gradient of each device's
  # local mean loss, then pmean over devices. With R psum-ed inside the loss this must give the gradient
  # of the global mean (the transpose of psum returns every device's share of R's cotangent).
  loss = rl.get(ER, **hparams)
  x, w, ids, where = _batch()
  where = where if masked else None
  expected_losses, expected_grad = _single_device(loss, x, w, ids, where)

  def per_device(w, x, ids, where):
    w = jax.lax.pcast(w, "batch", to="varying")

    def mean(w):
      losses = loss(x @ w, ids, where=where, axis_name="batch")
      return jnp.mean(losses), losses

    (_, losses), grad = jax.value_and_grad(mean, has_aux=True)(w)
    return losses, jax.lax.pmean(grad, "batch")

  where_arg = np.ones(B, bool) if where is None else where
  fn = jax.shard_map(
    per_device, mesh=_mesh(), in_specs=(P(), P("batch"), P("batch"), P("batch")), out_specs=(P("batch"), P())
  )
  losses, grad = jax.jit(fn)(w, x, ids, where_arg)
  np.testing.assert_allclose(losses, expected_losses, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(grad, expected_grad, rtol=RTOL, atol=ATOL)
  # Without axis_name each device would regularise its own 4 examples: a different loss.
  local = jax.jit(
    jax.shard_map(
      lambda x, w, ids: loss(x @ w, ids),
      mesh=_mesh(),
      in_specs=(P("batch"), P(), P("batch")),
      out_specs=P("batch"),
    )
  )(x, w, ids)
  assert not np.allclose(local, rl.get(ER, **hparams)(x @ w, ids), rtol=1e-3)


def test_anl_ce_er_masked_examples_are_left_out_of_the_batch_statistic():
  loss = rl.get(ER)
  x, w, ids, where = _batch()
  logits = x @ w
  masked = loss(logits, ids, where=where)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  # The kept examples get exactly the losses of a batch holding only them: pbar is over them alone.
  np.testing.assert_allclose(np.asarray(masked)[where], loss(logits[where], ids[where]), rtol=1e-6, atol=1e-7)
  # The batch term is shared: with NCE and NNCE off, every kept example carries the same R >= 0.
  r = rl.active_negative_loss_entropy_regularized(logits, ids, alpha=0.0, beta=0.0, lam=1.0, where=where)
  r = np.asarray(r)[where]
  assert np.all(r == r[0]) and r[0] > 0
  # And a batch without any valid example is all zeros with zero, finite gradients.
  none = np.zeros(B, bool)
  losses, grad = _single_device(loss, x, w, ids, none)
  np.testing.assert_array_equal(losses, 0.0)
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("axis_type", [None, jax.sharding.AxisType.Auto], ids=["explicit", "auto"])
def test_anl_ce_er_under_jit_with_sharded_inputs_needs_no_axis_name(axis_type):
  x, w, ids, where = _batch()
  logits, expected = x @ w, rl.active_negative_loss_entropy_regularized(x @ w, ids, where=where)
  mesh = jax.make_mesh((4,), ("batch",), axis_types=None if axis_type is None else (axis_type,))
  sharding = NamedSharding(mesh, P("batch"))
  losses = jax.jit(rl.active_negative_loss_entropy_regularized)(
    jax.device_put(logits, sharding), jax.device_put(ids, sharding), where=jax.device_put(where, sharding)
  )
  np.testing.assert_allclose(losses, expected, rtol=RTOL, atol=ATOL)


def test_anl_ce_er_in_shard_map_with_vmapped_replicas():
  # The training loop's layout: shard_map over devices, vmap over independent replicas (seeds) inside;
  # each replica's R is over that replica's global batch.
  loss = rl.get(ER)
  x, w, ids, where = _batch(seed=1, replicas=2)
  logits = jnp.einsum("bf,rfk->rbk", x, w)

  def per_device(z, y, m):
    return jax.vmap(lambda z, y, m: loss.call_with_aux(z, y, where=m, axis_name="batch"))(z, y, m)

  spec = P(None, "batch")
  fn = jax.shard_map(per_device, mesh=_mesh(), in_specs=(spec, spec, spec), out_specs=(spec, {}))
  losses, aux = jax.jit(fn)(logits, ids, where)
  assert aux == {}
  expected = jax.vmap(lambda z, y, m: loss(z, y, where=m))(logits, ids, where)
  np.testing.assert_allclose(losses, expected, rtol=RTOL, atol=ATOL)
  assert not np.allclose(losses[0], losses[1])


# --- GJS: several views per example ------------------------------------------------------------------


def _views(num_views, batch=(4,), seed=0):
  kz, ky = jax.random.split(jax.random.key(seed))
  logits = 3.0 * jax.random.normal(kz, (num_views, *batch, K))
  return logits, jax.random.randint(ky, batch, 0, K)


def _gjs_reference(logits, labels, weights):
  """The official formula in float64 NumPy, written from ErikEnglesson/GJS losses.py."""
  logits = np.asarray(logits, np.float64)
  y = np.eye(K)[np.asarray(labels)]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  distributions = [y, *p]
  m = sum(w * d for w, d in zip(weights, distributions))
  log_m = np.log(np.clip(m, 1e-7, 1.0))

  def kl(d):
    return np.sum(np.where(d > 0, d * (np.log(np.maximum(d, 1e-7)) - log_m), 0.0), axis=-1)

  scale = -1.0 / ((1.0 - weights[0]) * np.log(1.0 - weights[0]))
  return scale * sum(w * kl(d) for w, d in zip(weights, distributions))


@pytest.mark.parametrize("weights", [(0.9, 0.05, 0.05), (0.4, 0.1, 0.2, 0.3)], ids=["2views", "3views"])
def test_gjs_views_in_order_of_their_weights(weights):
  logits, ids = _views(len(weights) - 1, batch=(2, 3))
  losses = rl.generalized_jensen_shannon_divergence(logits, ids, js_weights=weights)
  assert losses.shape == (2, 3) and losses.dtype == jnp.float32
  # float32 vs float64: a few dozen roundings of terms <= ~20 (logits up to ~10).
  np.testing.assert_allclose(losses, _gjs_reference(logits, ids, weights), rtol=1e-5, atol=1e-6)
  # Views are exchangeable together with their weights, not alone.
  order = np.arange(len(weights) - 1)[::-1]
  swapped = (weights[0], *np.asarray(weights[1:])[order])
  np.testing.assert_allclose(
    rl.generalized_jensen_shannon_divergence(logits[order], ids, js_weights=swapped), losses, rtol=1e-6, atol=1e-7
  )
  if len(set(weights[1:])) > 1:
    assert not np.allclose(rl.generalized_jensen_shannon_divergence(logits[order], ids, js_weights=weights), losses)


def test_gjs_with_identical_views_is_the_one_view_js():
  # With every view equal to p, m = pi_1 y + (1 - pi_1) p and sum_i pi_i KL(p || m) = (1 - pi_1) KL(p || m):
  # exactly JS (checked against the official code itself) with pi = pi_1.
  logits, ids = _views(1, batch=(6,), seed=3)
  for weights in [(0.7, 0.15, 0.15), (0.3, 0.1, 0.2, 0.4)]:
    views = jnp.broadcast_to(logits, (len(weights) - 1, *logits.shape[1:]))
    np.testing.assert_allclose(
      rl.generalized_jensen_shannon_divergence(views, ids, js_weights=weights),
      rl.jensen_shannon_divergence(logits[0], ids, pi=weights[0]),
      rtol=1e-5,
      atol=1e-6,
    )


def test_gjs_where_masks_an_example_in_every_view():
  logits, ids = _views(2, batch=(5,), seed=4)
  where = np.array([True, False, True, True, False])
  garbage = jnp.where(where[:, None], logits, jnp.nan)
  losses = rl.generalized_jensen_shannon_divergence(garbage, ids, where=where)
  grad = jax.grad(lambda z: rl.generalized_jensen_shannon_divergence(z, ids, where=where).sum())(garbage)
  np.testing.assert_array_equal(np.asarray(losses)[~where], 0.0)
  np.testing.assert_array_equal(np.asarray(grad)[:, ~where], 0.0)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(
    np.asarray(losses)[where], rl.generalized_jensen_shannon_divergence(logits[:, where], ids[where]), rtol=1e-6
  )


def test_gjs_contract_errors_name_the_shapes():
  logits, ids = _views(3)
  with pytest.raises(
    ValueError, match=r"logits of shape \(3, 4, 5\) must stack the 2 views of js_weights=\(0.9, 0.05, 0.05\)"
  ):
    rl.generalized_jensen_shannon_divergence(logits, ids)
  # One view's logits [B, K] with B labels: the missing views axis is an error, not a silent broadcast.
  with pytest.raises(ValueError, match=r"must stack the 2 views"):
    rl.generalized_jensen_shannon_divergence(logits[0], ids)
  # Labels repeated per view ([M, B]) are not the labels of one view.
  with pytest.raises(ValueError, match=r"labels must be integer class ids of shape logits.shape\[:-1\] = \(4,\)"):
    rl.generalized_jensen_shannon_divergence(logits[:2], jnp.stack([ids, ids]))
  with pytest.raises(ValueError, match=r"must be a sequence of concrete numbers"):
    jax.jit(lambda w: rl.generalized_jensen_shannon_divergence(logits[:2], ids, js_weights=w))(jnp.array([0.5, 0.25]))


def test_gjs_through_the_registry_with_label_smoothing():
  # Label smoothing reads the labels of one view (the registry smooths before the loss sees them).
  logits, ids = _views(2, seed=5)
  loss = rl.get(GJS, js_weights=(0.5, 0.25, 0.25), label_smoothing=0.1)
  assert loss.num_views == 2
  smoothed = 0.9 * jax.nn.one_hot(ids, K) + 0.1 / K
  np.testing.assert_allclose(
    loss(logits, ids),
    rl.generalized_jensen_shannon_divergence(logits, smoothed, js_weights=(0.5, 0.25, 0.25)),
    rtol=1e-6,
  )
  assert rl.get("jensen_shannon_divergence").num_views == 1


@pytest.mark.parametrize(
  "fn",
  [
    rl.active_negative_loss_entropy_regularized,
    rl.asymmetric_norm_loss,
    rl.partially_huberised_generalized_cross_entropy,
    rl.generalized_jensen_shannon_divergence,
  ],
  ids=lambda f: f.__name__,
)
def test_docstring_examples_run(fn):
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  for test in doctest.DocTestFinder().find(fn, fn.__name__, globs={}):
    assert test.examples, f"{fn.__name__} has no Examples"
    runner.run(test)
  assert runner.summarize(verbose=False).failed == 0


def test_gjs_weights_are_a_tuple_hyperparameter():
  # js_weights is a tuple hyperparameter (a config placeholder of type tuple), unlike JS's float pi.
  types = rl.hparam_types()
  assert types["js_weights"] is tuple and types["pi"] is float
  # Any sequence works in a direct call; the registry stores it as a tuple (hashable, by value).
  assert rl.generalized_jensen_shannon_divergence(*_views(2), js_weights=[0.5, 0.25, 0.25]).shape == (4,)
  assert rl.get(GJS, js_weights=[0.5, 0.25, 0.25]) == rl.get(GJS, js_weights=(0.5, 0.25, 0.25))
