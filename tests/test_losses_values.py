"""Loss values against independent NumPy (float64) formulas, and the identities between losses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import robust_losses as rl

# Four examples, K = 4: confident and right, unsure, confident and wrong, right. (Shapes [4, 4] and
# [6, 4] are shared with test_losses.py: eager JAX caches each operation per shape.)
LOGITS = np.array(
  [[3.0, 0.5, -1.0, 0.2], [0.3, 0.1, -0.2, 0.4], [2.5, -1.5, 0.0, -0.5], [0.0, 1.0, 0.5, -2.0]], np.float32
)
Y = np.eye(4, dtype=np.float32)[[0, 2, 3, 1]]
SOFT = np.array(
  [[0.7, 0.1, 0.1, 0.1], [0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.6, 0.3, 0.0]], np.float32
)
T = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.0, 0.1, 0.8, 0.1], [0.1, 0.0, 0.3, 0.6]])
TOL = dict(rtol=1e-5, atol=1e-6)


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_softmax(z):
  return np.exp(np_log_softmax(z))


def np_ce(z, y):
  return -(y * np_log_softmax(z)).sum(-1)


def np_py(z, y):
  return (y * np_softmax(z)).sum(-1)


def np_rce(z, y, A=-4.0):
  y = np.asarray(y, np.float64)
  log_y = np.where(y > 0, np.maximum(np.log(np.maximum(y, 1e-300)), A), A)  # log 0 := A, clamped at A
  return -(np_softmax(z) * log_y).sum(-1)


def np_focal_terms(z, gamma):
  p = np_softmax(z)
  return -((1 - p) ** gamma) * np.log(p)


def np_lq(p, q):
  return (1 - p**q) / q


def close(actual, expected, **tol):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **(tol or TOL))


# --- hand-computed values -------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [Y, SOFT], ids=["onehot", "soft"])
def test_simple_losses(labels):
  p = np_softmax(LOGITS)
  close(rl.softmax_cross_entropy(LOGITS, labels), np_ce(LOGITS, labels))
  s = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
  close(rl.sigmoid_binary_cross_entropy(LOGITS, labels), (-labels * np.log(s) - (1 - labels) * np.log(1 - s)).mean(-1))
  close(rl.mean_absolute_error(LOGITS, labels), np.abs(labels - p).sum(-1))
  close(rl.mean_squared_error(LOGITS, labels), ((labels - p) ** 2).sum(-1))
  close(rl.focal_loss(LOGITS, labels, gamma=2.0), (labels * np_focal_terms(LOGITS, 2.0)).sum(-1))
  close(rl.focal_loss(LOGITS, labels), (labels * np_focal_terms(LOGITS, 0.5)).sum(-1))
  close(rl.reverse_cross_entropy(LOGITS, labels), np_rce(LOGITS, labels))
  close(rl.reverse_cross_entropy(LOGITS, labels, A=-9.0), np_rce(LOGITS, labels, A=-9.0))


def test_mae_and_rce_one_hot_closed_forms():
  p_y = np_py(LOGITS, Y)
  close(rl.mean_absolute_error(LOGITS, Y), 2 - 2 * p_y)
  close(rl.reverse_cross_entropy(LOGITS, Y), 4.0 * (1 - p_y))


def test_bootstrapping():
  p, log_p = np_softmax(LOGITS), np_log_softmax(LOGITS)
  soft_target = 0.95 * Y + 0.05 * p
  close(rl.bootstrapped_cross_entropy(LOGITS, Y), -(soft_target * log_p).sum(-1))
  hard_target = 0.8 * Y + 0.2 * np.eye(4)[p.argmax(-1)]
  close(rl.bootstrapped_cross_entropy(LOGITS, Y, beta=0.8, mode="hard"), -(hard_target * log_p).sum(-1))
  # Soft bootstrapping is beta*CE + (1-beta)*H(p) (Reed et al.: minimum-entropy regularisation), and the
  # prediction in the target is differentiated, as in the SCE authors' Keras code: the gradient is
  # beta*(p - y) + (1-beta)*dH/dz with dH/dz_j = -p_j (log p_j + H), written out here by hand.
  x = jnp.asarray(LOGITS)
  grad = jax.grad(lambda x: rl.bootstrapped_cross_entropy(x, Y).sum())(x)
  entropy = -(p * log_p).sum(-1, keepdims=True)
  expected = 0.95 * (p - Y) + 0.05 * (-p * (log_p + entropy))
  chex.assert_trees_all_close(grad, expected, atol=1e-6)
  # ... which is not the stop-gradient version (= 0.95 * grad CE), the bug this test guards against.
  assert np.abs(np.asarray(grad) - 0.95 * (p - Y)).max() > 1e-2
  # Hard bootstrapping: the argmax target is piecewise constant, so the gradient is
  # beta*(p - y) + (1-beta)*(p - onehot(argmax p)).
  hard = jax.grad(lambda x: rl.bootstrapped_cross_entropy(x, Y, beta=0.8, mode="hard").sum())(x)
  chex.assert_trees_all_close(hard, 0.8 * (p - Y) + 0.2 * (p - np.eye(4)[p.argmax(-1)]), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
def test_tamed_cross_entropy_value(alpha):
  u = np_ce(LOGITS, Y)
  expected = np.log1p(u) if alpha == 1 else ((1 + u) ** (1 - alpha) - 1) / (1 - alpha)
  close(rl.tamed_cross_entropy(LOGITS, Y, alpha=alpha), expected)


@pytest.mark.parametrize("labels", [Y, SOFT], ids=["onehot", "soft"])
def test_generalized_cross_entropy_value(labels):
  close(rl.generalized_cross_entropy(LOGITS, labels), (labels * np_lq(np_softmax(LOGITS), 0.7)).sum(-1))
  close(rl.generalized_cross_entropy(LOGITS, labels, q=0.3), (labels * np_lq(np_softmax(LOGITS), 0.3)).sum(-1))


def test_truncated_lq_value_weights_and_gradient():
  q, k = 0.7, 0.5
  p_y = np_py(LOGITS, Y)
  assert (p_y > k).any() and (p_y <= k).any()  # the example exercises both branches
  expected = np.where(p_y > k, np_lq(p_y, q), np_lq(k, q))
  close(rl.truncated_generalized_cross_entropy(LOGITS, Y), expected)
  w = np.array([1.0, 0.0, 0.25, 0.5], np.float32)
  close(rl.truncated_generalized_cross_entropy(LOGITS, Y, weights=w), w * np_lq(p_y, q) + (1 - w) * np_lq(k, q))
  np.testing.assert_array_equal(rl.truncated_lq_prune_weights(LOGITS, Y, q=q, k=k), (p_y > k))
  chex.assert_type(rl.truncated_lq_prune_weights(LOGITS, Y, q=q, k=k), jnp.float32)
  # Truncated samples (p_y <= k) contribute a constant: zero gradient; kept ones get the GCE gradient.
  x = jnp.asarray(LOGITS)
  grad = jax.grad(lambda x: rl.truncated_generalized_cross_entropy(x, Y).sum())(x)
  gce_grad = jax.grad(lambda x: rl.generalized_cross_entropy(x, Y).sum())(x)
  np.testing.assert_array_equal(grad[p_y <= k], 0.0)
  chex.assert_trees_all_close(grad[p_y > k], gce_grad[p_y > k])


def test_symmetric_and_normalized_values():
  log_p = np_log_softmax(LOGITS)
  close(rl.symmetric_cross_entropy(LOGITS, Y, alpha=6.0, beta=0.1), 6.0 * np_ce(LOGITS, Y) + 0.1 * np_rce(LOGITS, Y))
  close(rl.normalized_cross_entropy(LOGITS, SOFT), (SOFT * log_p).sum(-1) / log_p.sum(-1))
  fl = np_focal_terms(LOGITS, 0.5)
  close(rl.normalized_focal_loss(LOGITS, Y), (Y * fl).sum(-1) / fl.sum(-1))
  p = np_softmax(LOGITS)
  # APL reference code: (1 - p_y^q) / (K - sum_j p_j^q).
  close(
    rl.normalized_generalized_cross_entropy(LOGITS, Y, q=0.7), (1 - np_py(LOGITS, Y) ** 0.7) / (4 - (p**0.7).sum(-1))
  )


@pytest.mark.parametrize(
  "active,passive", [("nce", "rce"), ("nfl", "mae"), ("ngce", "nmae"), ("ce", "nrce"), ("fl", "rce")]
)
def test_active_passive_loss_value(active, passive):
  log_p, p = np_log_softmax(LOGITS), np_softmax(LOGITS)
  fl = np_focal_terms(LOGITS, 0.5)
  lq = np_lq(p, 0.7)
  act = {
    "ce": -(Y * log_p).sum(-1),
    "fl": (Y * fl).sum(-1),
    "nce": (Y * log_p).sum(-1) / log_p.sum(-1),
    "nfl": (Y * fl).sum(-1) / fl.sum(-1),
    "ngce": (Y * lq).sum(-1) / lq.sum(-1),
  }[active]
  mae = np.abs(Y - p).sum(-1)
  pas = {"rce": np_rce(LOGITS, Y), "nrce": np_rce(LOGITS, Y) / (4.0 * 3), "mae": mae, "nmae": mae / 6}[passive]
  close(rl.active_passive_loss(LOGITS, Y, active=active, passive=passive, alpha=10.0, beta=0.1), 10.0 * act + 0.1 * pas)


@pytest.mark.parametrize("labels", [Y, SOFT], ids=["onehot", "soft"])
def test_loss_correction_values(labels):
  p = np_softmax(LOGITS)
  close(rl.forward_corrected_cross_entropy(LOGITS, labels, transition_matrix=T), -(labels * np.log(p @ T)).sum(-1))
  close(
    rl.backward_corrected_cross_entropy(LOGITS, labels, transition_matrix=T),
    -((labels @ np.linalg.inv(T)) * np.log(p)).sum(-1),
    rtol=1e-5,
    atol=1e-5,
  )


def np_bi_tempered(z, y, t1, t2):
  """Bi-tempered loss with the normaliser solved exactly by bisection (float64)."""

  def log_t(x, t):
    return np.log(x) if t == 1 else (x ** (1 - t) - 1) / (1 - t)

  def exp_t(x, t):
    return np.exp(x) if t == 1 else np.maximum(1 + (1 - t) * x, 0) ** (1 / (1 - t))

  z = np.asarray(z, np.float64)
  losses = []
  for zi, yi in zip(z, y):
    lo, hi = zi.max() - 50.0, zi.max() + 50.0
    for _ in range(200):
      mid = (lo + hi) / 2
      lo, hi = (lo, mid) if exp_t(zi - mid, t2).sum() < 1 else (mid, hi)
    p = exp_t(zi - (lo + hi) / 2, t2)
    pos = yi > 0
    label_term = (yi[pos] * log_t(yi[pos], t1)).sum() - (yi[pos] ** (2 - t1)).sum() / (2 - t1)
    losses.append(label_term - (yi * log_t(p, t1)).sum() + (p ** (2 - t1)).sum() / (2 - t1))
  return np.array(losses)


@pytest.mark.parametrize("t1,t2", [(0.8, 1.2), (0.5, 1.5), (1.0, 1.3), (0.7, 1.0)])
@pytest.mark.parametrize("labels", [Y, SOFT], ids=["onehot", "soft"])
def test_bi_tempered_value(t1, t2, labels):
  # Enough fixed-point iterations to converge to the exact normaliser.
  close(
    rl.bi_tempered_logistic_loss(LOGITS, labels, t1=t1, t2=t2, num_iters=40),
    np_bi_tempered(LOGITS, labels, t1, t2),
    rtol=1e-4,
    atol=1e-5,
  )


def test_bi_tempered_matches_reference_test_values():
  # Expected values from the unit tests of google/bi-tempered-loss (jax/loss_test.py), num_iters = 5.
  labels = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.2, 0.8, 0.0]], np.float32)
  logits = np.array([[-0.5, 0.1, 2.0], [0.1, 1.5, -5.0], [4.0, -3.0, -6.0]], np.float32)
  close(rl.bi_tempered_logistic_loss(logits, labels, t1=0.5, t2=1.5), [0.02301914, 0.18972909, 0.93874922], atol=1e-4)
  close(
    rl.bi_tempered_logistic_loss(logits, np.eye(3), t1=0.5, t2=1.5, label_smoothing=0.1),
    [0.76652711, 0.08627685, 1.35443510],
    atol=1e-4,
  )
  for t1, t2, expected in [(0.9, 1.1, 0.45677936), (0.8, 1.2, 0.34298314), (0.7, 1.3, 0.26295574)]:
    close(rl.bi_tempered_logistic_loss(logits[:1], np.array([[0.2, 0.5, 0.3]]), t1=t1, t2=t2), [expected], atol=1e-5)


def test_bi_tempered_gradient_is_gradient_of_the_loss():
  # The custom (analytic) gradient must be the derivative of the converged forward loss.
  x = jnp.asarray(LOGITS)
  f = lambda x: rl.bi_tempered_logistic_loss(x, SOFT, t1=0.7, t2=1.3, num_iters=40).sum()  # noqa: E731
  grad = np.asarray(jax.grad(f)(x), np.float64)
  eps = 1e-2
  f_np = lambda z: np_bi_tempered(z, SOFT, 0.7, 1.3).sum()  # noqa: E731
  numeric = np.zeros_like(grad)
  for idx in np.ndindex(*LOGITS.shape):
    e = np.zeros(LOGITS.shape)
    e[idx] = eps
    numeric[idx] = (f_np(LOGITS + e) - f_np(LOGITS - e)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, atol=1e-4)


def test_clipped_loss_values():
  # The clipping itself: warmup_epochs=0 clips from the first step (the default warm-up needs an epoch).
  ce = np_ce(LOGITS, Y)
  close(
    rl.clipped_cross_entropy(LOGITS, Y, statistic="quantile", warmup_epochs=0), np.minimum(ce, np.quantile(ce, 0.9))
  )
  close(rl.clipped_cross_entropy(LOGITS, Y, statistic="mean", warmup_epochs=0), np.minimum(ce, ce.mean()))
  close(rl.clipped_cross_entropy(LOGITS, Y, statistic="median", warmup_epochs=0), np.minimum(ce, np.median(ce)))
  fl = (Y * np_focal_terms(LOGITS, 0.5)).sum(-1)
  close(
    rl.clipped_focal_loss(LOGITS, Y, statistic="mean_std", num_std=0.5, warmup_epochs=0),
    np.minimum(fl, fl.mean() + 0.5 * fl.std()),
  )
  s = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
  elements = -Y * np.log(s) - (1 - Y) * np.log(1 - s)
  bce = elements.mean(-1)
  close(
    rl.binary_cross_entropy_dynamic_clipping(LOGITS, Y, statistic="quantile", quantile=0.3, warmup_epochs=0),
    np.minimum(bce, np.quantile(bce, 0.3)),
  )
  close(
    rl.binary_cross_entropy_dynamic_clipping(LOGITS, Y, per_element=True, statistic="mean", warmup_epochs=0),
    np.minimum(elements, elements.mean()).mean(-1),
  )


# --- identities -----------------------------------------------------------------------------------


def _value_and_grad(fn, logits, labels):
  """Per-example losses and d(sum)/d(logits) (= per-example gradients, examples being independent)."""
  return fn(logits, labels), jax.grad(lambda x: fn(x, labels).sum())(logits)


def _random_batch(seed=0, n=6, k=4, scale=3.0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return scale * jax.random.normal(kx, (n, k)), jax.nn.one_hot(jax.random.randint(ky, (n,), 0, k), k)


def test_headline_tamed_cross_entropy_at_alpha_zero_is_cross_entropy():
  logits, labels = _random_batch()
  chex.assert_trees_all_close(
    _value_and_grad(lambda x, y: rl.tamed_cross_entropy(x, y, alpha=0.0), logits, labels),
    _value_and_grad(rl.softmax_cross_entropy, logits, labels),
    rtol=0,
    atol=0,
  )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
def test_tamed_cross_entropy_gradient_is_scaled_ce_gradient(alpha):
  logits, labels = _random_batch(seed=1)
  ce, ce_grad = _value_and_grad(rl.softmax_cross_entropy, logits, labels)
  _, tce_grad = _value_and_grad(lambda x, y: rl.tamed_cross_entropy(x, y, alpha=alpha), logits, labels)
  chex.assert_trees_all_close(tce_grad, (1 + ce)[:, None] ** -alpha * ce_grad, rtol=1e-5, atol=1e-7)


def test_tamed_cross_entropy_alpha_one_is_log1p_ce_and_traced_alpha_matches():
  logits, labels = _random_batch(seed=2)
  ce = rl.softmax_cross_entropy(logits, labels)
  chex.assert_trees_all_close(rl.tamed_cross_entropy(logits, labels, alpha=1.0), jnp.log1p(ce))
  traced = jax.jit(lambda a: _value_and_grad(lambda x, y: rl.tamed_cross_entropy(x, y, alpha=a), logits, labels))
  for alpha in (0.0, 1.0, 1.5):
    concrete = _value_and_grad(lambda x, y: rl.tamed_cross_entropy(x, y, alpha=alpha), logits, labels)
    chex.assert_trees_all_close(traced(alpha), concrete, rtol=1e-6, atol=1e-7)


def test_generalized_cross_entropy_limits():
  logits, labels = _random_batch(seed=3)
  ce, ce_grad = _value_and_grad(rl.softmax_cross_entropy, logits, labels)
  chex.assert_trees_all_close(
    _value_and_grad(lambda x, y: rl.generalized_cross_entropy(x, y, q=0.0), logits, labels),
    (ce, ce_grad),
    rtol=0,
    atol=0,
  )
  chex.assert_trees_all_close(rl.generalized_cross_entropy(logits, labels, q=1e-4), ce, rtol=1e-3)
  p_y = jnp.sum(labels * jax.nn.softmax(logits), -1)
  chex.assert_trees_all_close(rl.generalized_cross_entropy(logits, labels, q=1.0), 1 - p_y, atol=1e-6)
  # Gradient = p_y^q * grad CE.
  _, gce_grad = _value_and_grad(rl.generalized_cross_entropy, logits, labels)
  chex.assert_trees_all_close(gce_grad, p_y[:, None] ** 0.7 * ce_grad, rtol=1e-4, atol=1e-6)
  # NGCE at q = 0 is NCE.
  chex.assert_trees_all_close(
    rl.normalized_generalized_cross_entropy(logits, labels, q=0.0), rl.normalized_cross_entropy(logits, labels)
  )


def test_mae_is_symmetric():
  logits, _ = _random_batch(seed=4)
  total = sum(rl.mean_absolute_error(logits, jnp.broadcast_to(jax.nn.one_hot(j, 4), logits.shape)) for j in range(4))
  chex.assert_trees_all_close(total, jnp.full(logits.shape[0], 2 * 4 - 2.0), atol=1e-5)


def test_identity_transition_matrix_gives_cross_entropy():
  logits, labels = _random_batch(seed=5)
  ce = _value_and_grad(rl.softmax_cross_entropy, logits, labels)
  for fn in (rl.forward_corrected_cross_entropy, rl.backward_corrected_cross_entropy):
    chex.assert_trees_all_close(
      _value_and_grad(lambda x, y: fn(x, y, transition_matrix=np.eye(4)), logits, labels), ce, rtol=1e-6, atol=1e-6
    )


def test_bi_tempered_at_unit_temperatures_is_cross_entropy():
  logits, labels = _random_batch(seed=6)
  chex.assert_trees_all_close(
    _value_and_grad(rl.bi_tempered_logistic_loss, logits, labels),
    _value_and_grad(rl.softmax_cross_entropy, logits, labels),
    rtol=1e-6,
    atol=1e-6,
  )


def test_symmetric_cross_entropy_is_weighted_ce_plus_rce():
  logits, labels = _random_batch(seed=7)
  for alpha, beta in ((0.1, 1.0), (6.0, 0.1)):
    chex.assert_trees_all_close(
      rl.symmetric_cross_entropy(logits, labels, alpha=alpha, beta=beta),
      alpha * rl.softmax_cross_entropy(logits, labels) + beta * rl.reverse_cross_entropy(logits, labels),
      rtol=1e-6,
    )


def test_normalized_losses_lie_in_unit_interval():
  logits, labels = _random_batch(seed=8, scale=10.0)
  logits = logits.at[:2].set(jnp.array([1e4, -1e4, 0.0, 5.0]))
  for fn in (rl.normalized_cross_entropy, rl.normalized_focal_loss, rl.normalized_generalized_cross_entropy):
    values = np.asarray(fn(logits, labels))
    assert np.all((values >= 0) & (values <= 1 + 1e-6)), (fn.__name__, values.min(), values.max())


def test_function_level_bad_hyperparameters():
  with pytest.raises(ValueError, match=r"alpha=-0.5 is out of range; valid range is \[0, inf\)"):
    rl.tamed_cross_entropy(LOGITS, Y, alpha=-0.5)
  with pytest.raises(ValueError, match=r"q=1.5 is out of range; valid range is \[0, 1\]"):
    rl.generalized_cross_entropy(LOGITS, Y, q=1.5)
  with pytest.raises(ValueError, match=r"k=1.0 is out of range; valid range is \(0, 1\)"):
    rl.truncated_lq_prune_weights(LOGITS, Y, q=0.7, k=1.0)
  with pytest.raises(ValueError, match=r"row 1 sums to"):
    bad = T.copy()
    bad[1, 1] += 0.1
    rl.forward_corrected_cross_entropy(LOGITS, Y, transition_matrix=bad)
  with pytest.raises(ValueError, match=r"logits have 4 classes"):
    rl.forward_corrected_cross_entropy(LOGITS, Y, transition_matrix=np.eye(3))
  with pytest.raises(ValueError, match=r"singular"):
    rl.backward_corrected_cross_entropy(LOGITS, Y, transition_matrix=np.full((4, 4), 0.25))
  with pytest.raises(ValueError, match=r"labels must be integer class ids of shape"):
    rl.softmax_cross_entropy(LOGITS, np.array([0, 2, 3]))
  # Traced hyperparameters skip the Python checks instead of failing to trace.
  jax.jit(lambda q: rl.generalized_cross_entropy(LOGITS, Y, q=q))(0.5)


def test_registry_label_smoothing_is_optax_smooth_labels():
  smoothed = optax.smooth_labels(jnp.asarray(Y), 0.1)
  for name, hparams in [
    ("generalized_cross_entropy", {}),
    ("forward_corrected_cross_entropy", {"transition_matrix": T}),
  ]:
    fn = getattr(rl, name)
    chex.assert_trees_all_close(
      rl.get(name, label_smoothing=0.1, **hparams)(LOGITS, Y), fn(LOGITS, smoothed, **hparams)
    )
  # Bi-tempered keeps the reference's own convention (mass 1 - s on the label, s / (K - 1) elsewhere).
  reference_smoothed = 0.9 * Y + 0.1 / 3 * (1 - Y)
  chex.assert_trees_all_close(
    rl.get("bi_tempered_logistic_loss", t1=0.8, t2=1.2, label_smoothing=0.1)(LOGITS, Y),
    rl.bi_tempered_logistic_loss(LOGITS, reference_smoothed, t1=0.8, t2=1.2),
    rtol=1e-6,
  )


# --- written-out gradients of the class-id fast paths ---------------------------------------------
# With integer labels, NCE, NFL, NGCE and APL (with those active terms) take
# `_utils.label_log_prob_and_sum`, soft bootstrapping `_utils.label_log_prob_and_entropy` and sigmoid BCE
# `classification._one_vs_all_softplus_sum`: one pass over the classes with a hand-written derivative
# (jax.custom_jvp, transposed for reverse mode). It must be exactly the gradient of the formula: here against
# jax.grad of the formula written directly in jax.numpy on one-hot labels (no fast path). Forward mode and
# second derivatives: tests/test_forward_mode.py.


def _f_nce(z, y):
  lp = jax.nn.log_softmax(z)
  return (y * lp).sum(-1) / lp.sum(-1)


def _f_nfl(gamma, detach=False):
  def f(z, y):
    p, lp = jax.nn.softmax(z), jax.nn.log_softmax(z)
    modulator = (1 - p) ** gamma
    t = -(jax.lax.stop_gradient(modulator) if detach else modulator) * lp
    return (y * t).sum(-1) / t.sum(-1)

  return f


def _f_ngce(q):
  def f(z, y):
    t = 1 - jax.nn.softmax(z) ** q
    return (y * t).sum(-1) / t.sum(-1)

  return f


def _f_p_y(z, y):
  return (y * jax.nn.softmax(z)).sum(-1)


FUSED_GRADIENT_CASES = [
  ("normalized_cross_entropy", {}, _f_nce),
  ("normalized_focal_loss", {}, _f_nfl(0.5)),
  ("normalized_focal_loss", {"gamma": 2.0}, _f_nfl(2.0)),
  ("normalized_focal_loss", {"gamma": 1.0}, _f_nfl(1.0)),
  ("normalized_focal_loss", {"gamma": 0.7}, _f_nfl(0.7)),
  ("normalized_focal_loss", {"gamma": 0.5, "detach_modulator": True}, _f_nfl(0.5, detach=True)),
  ("normalized_generalized_cross_entropy", {}, _f_ngce(0.7)),
  ("normalized_generalized_cross_entropy", {"q": 1.0}, _f_ngce(1.0)),
  ("normalized_generalized_cross_entropy", {"q": 0.1}, _f_ngce(0.1)),
  ("normalized_generalized_cross_entropy", {"q": 0.0}, _f_nce),
  ("active_passive_loss", {}, lambda z, y: _f_nce(z, y) + 4.0 * (1 - _f_p_y(z, y))),
  (
    "active_passive_loss",
    {"active": "nfl", "passive": "mae", "alpha": 2.0, "beta": 0.5},
    lambda z, y: 2.0 * _f_nfl(0.5)(z, y) + 0.5 * 2 * (1 - _f_p_y(z, y)),
  ),
  (
    "active_passive_loss",
    {"active": "ngce", "passive": "nrce"},
    lambda z, y: _f_ngce(0.7)(z, y) + (1 - _f_p_y(z, y)) / (z.shape[-1] - 1),
  ),
  (
    "bootstrapped_cross_entropy",
    {},
    lambda z, y: (
      -0.95 * (y * jax.nn.log_softmax(z)).sum(-1) - 0.05 * (jax.nn.softmax(z) * jax.nn.log_softmax(z)).sum(-1)
    ),
  ),
  (
    "sigmoid_binary_cross_entropy",
    {},
    lambda z, y: (-y * jax.nn.log_sigmoid(z) - (1 - y) * jax.nn.log_sigmoid(-z)).mean(-1),
  ),
]
FUSED_GRADIENT_IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for n, kw, _ in FUSED_GRADIENT_CASES]


@pytest.mark.parametrize("name,hparams,formula", FUSED_GRADIENT_CASES, ids=FUSED_GRADIENT_IDS)
def test_class_id_fast_path_gradient_is_the_gradient_of_the_formula(name, hparams, formula):
  k = 7
  logits = 3.0 * jax.random.normal(jax.random.key(11), (3, 4, k))
  ids = jax.random.randint(jax.random.key(12), (3, 4), 0, k)
  onehot = jax.nn.one_hot(ids, k)
  fn = getattr(rl, name)
  value, grad = jax.jit(lambda z: _value_and_grad(lambda x, y: fn(x, y, **hparams), z, ids))(logits)
  expected_value, expected_grad = jax.jit(lambda z: _value_and_grad(formula, z, onehot))(logits)
  np.testing.assert_allclose(value, expected_value, rtol=2e-6, atol=1e-7)
  np.testing.assert_allclose(grad, expected_grad, rtol=2e-5, atol=2e-7)
  # A cotangent other than ones (here the weights of a weighted mean) reaches every example unchanged.
  weights = jax.random.uniform(jax.random.key(13), (3, 4))
  weighted = jax.grad(lambda z: (weights * fn(z, ids, **hparams)).sum())(logits)
  expected_weighted = jax.grad(lambda z: (weights * formula(z, onehot)).sum())(logits)
  np.testing.assert_allclose(weighted, expected_weighted, rtol=2e-5, atol=2e-7)
  # vmap over a leading axis and masked examples behave as everywhere else.
  vmapped = jax.vmap(jax.grad(lambda z, y: fn(z, y, **hparams).sum()))(logits, ids)
  np.testing.assert_allclose(vmapped, grad, rtol=1e-6, atol=1e-8)
  where = np.array([[True, False, True, True]] * 3)
  masked = jax.grad(lambda z: fn(z, ids, where=where, **hparams).sum())(logits)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  np.testing.assert_allclose(np.asarray(masked)[where], np.asarray(grad)[where], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,hparams,formula", FUSED_GRADIENT_CASES, ids=FUSED_GRADIENT_IDS)
def test_class_id_fast_path_is_finite_and_equals_one_hot_at_extreme_logits(name, hparams, formula):
  del formula
  big = 1e4  # confidently right, confidently wrong, a tie at the top, all equal
  logits = jnp.array(
    [[big, -big, -big, -big], [big, -big, -big, -big], [big, big, -big, -big], [-big, -big, -big, -big]]
  )
  ids = jnp.array([0, 2, 1, 3])
  fn = getattr(rl, name)
  value, grad = _value_and_grad(lambda x, y: fn(x, y, **hparams), logits, ids)
  one_hot_value, one_hot_grad = _value_and_grad(lambda x, y: fn(x, y, **hparams), logits, jax.nn.one_hot(ids, 4))
  assert np.isfinite(np.asarray(value)).all() and np.isfinite(np.asarray(grad)).all()
  np.testing.assert_allclose(value, one_hot_value, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, one_hot_grad, rtol=1e-6, atol=1e-6)


def test_traced_hyperparameters_take_the_autodiff_path_with_the_same_gradient():
  logits = 3.0 * jax.random.normal(jax.random.key(14), (6, 5))
  ids = jax.random.randint(jax.random.key(15), (6,), 0, 5)
  for fn, kw in ((rl.normalized_focal_loss, "gamma"), (rl.normalized_generalized_cross_entropy, "q")):
    traced = jax.jit(lambda v: _value_and_grad(lambda x, y: fn(x, y, **{kw: v}), logits, ids))(0.5)
    concrete = _value_and_grad(lambda x, y: fn(x, y, **{kw: 0.5}), logits, ids)
    chex.assert_trees_all_close(traced, concrete, rtol=2e-5, atol=1e-7)


def _two_pass_gmm(values, valid, separation, steps=20):
  """The GMM clipping statistic as first written (softmax responsibilities, two-pass variances): the
  reference that `thresholds.gmm` (one exp per element, one matrix-vector product per EM step) must match."""
  x = jnp.where(valid, jnp.log(jnp.maximum(values, 1e-12)), 0.0)
  w = valid.astype(jnp.float32)
  n_valid = jnp.maximum(jnp.sum(valid), 1)
  mean = jnp.sum(jnp.where(valid, x, 0.0)) / n_valid
  std = jnp.maximum(jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0)) / n_valid), 1e-3)
  floor = 1e-2 * std
  lo, hi = jnp.min(jnp.where(valid, x, jnp.inf)), jnp.max(jnp.where(valid, x, -jnp.inf))
  spread = jnp.maximum(hi - lo, 1e-3)
  mu = jnp.stack([lo + 0.25 * spread, lo + 0.75 * spread])
  sigma, pi = jnp.stack([std, std]) / 2, jnp.array([0.5, 0.5])

  def responsibilities(mu, sigma, pi):
    return jax.nn.softmax(jnp.log(pi) - jnp.log(sigma) - 0.5 * jnp.square((x[:, None] - mu) / sigma), axis=-1)

  for _ in range(steps):
    r = responsibilities(mu, sigma, pi) * w[:, None]
    n = jnp.maximum(jnp.sum(r, axis=0), 1e-6)
    mu = jnp.sum(r * x[:, None], axis=0) / n
    sigma = jnp.sqrt(jnp.sum(r * jnp.square(x[:, None] - mu), axis=0) / n + floor**2)
    pi = n / jnp.sum(n)
  high = jnp.argmax(mu)
  noisy = (responsibilities(mu, sigma, pi)[:, high] > 0.5) & (x > jnp.min(mu)) & valid
  separated = jnp.abs(mu[1] - mu[0]) >= separation * jnp.sqrt(0.5 * (sigma[0] ** 2 + sigma[1] ** 2))
  tau = jnp.nextafter(jnp.min(jnp.where(noisy, values, jnp.inf)), -jnp.inf)
  return jnp.where(separated & jnp.any(noisy), tau, jnp.max(jnp.where(valid, values, -jnp.inf)))


def _gmm_test_batch(rng, n):
  """Losses of a clean mode and a noisy one: no noisy mode, a handful of noisy examples, up to 60 %, or a
  far and tight noisy mode; 8 to n valid entries."""
  kind = rng.integers(4)
  noisy = (0, int(rng.integers(1, 6)), int(n * rng.uniform(0, 0.6)), int(n * rng.uniform(0.01, 0.3)))[kind]
  far, spread = (rng.uniform(3, 8), rng.uniform(0.02, 0.3)) if kind == 3 else (rng.uniform(-1, 4), rng.uniform(0.1, 1))
  losses = np.concatenate(
    [np.exp(rng.normal(rng.uniform(-6, 0), rng.uniform(0.05, 1.5), n - noisy)), np.exp(rng.normal(far, spread, noisy))]
  )
  return rng.permutation(losses).astype(np.float32), np.arange(n) < rng.integers(8, n + 1)


def test_gmm_threshold_equals_the_two_pass_em():
  from robust_losses import thresholds

  rng = np.random.default_rng(0)
  fast, reference = jax.jit(thresholds.gmm), jax.jit(_two_pass_gmm)
  clipped = 0
  for trial in range(150):
    losses, valid = _gmm_test_batch(rng, (128, 1024)[trial % 2])
    separation = jnp.float32(rng.choice([1.0, 2.0, 3.0, 4.0]))
    tau = float(fast(losses, valid, separation))
    assert tau == float(reference(losses, valid, separation)), trial
    clipped += tau < losses[valid].max()
  assert 30 < clipped < 140  # both outcomes (clip the noisy mode / keep everything) are exercised
