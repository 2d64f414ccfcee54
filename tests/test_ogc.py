"""OGC (optimized gradient clipping): the threshold search and mixture fit against the official code's numbers
(tests/fixtures/official/ogc_threshold.json), the loss's conventions, and the threshold state (schedule, queue,
1 vs 4 devices, jit, fixed shapes). The loss values at fixed thresholds are in test_official_fixtures.py."""

import collections
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import robust_losses as rl
from robust_losses import ogc

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "official")


@functools.lru_cache(maxsize=None)
def _fixture():
  with open(os.path.join(FIXTURES, "ogc_threshold.json")) as f:
    return json.load(f)


def _base_kwargs(case):
  return {"base": case["base"], **case["hparams"]}


def _components(case):
  return (
    np.array([case["clean"]["mean"], case["noisy"]["mean"]], np.float32),
    np.array([case["clean"]["covariance"], case["noisy"]["covariance"]], np.float32),
  )


@functools.lru_cache(maxsize=None)
def _search(base, gamma=0.5, q=0.7):
  return jax.jit(lambda m, v, lr: ogc.search_threshold(m, v, learning_rate=lr, base=base, gamma=gamma, q=q))


@functools.lru_cache(maxsize=None)
def _ratio(base, gamma=0.5, q=0.7):
  return jax.jit(
    jax.vmap(lambda t, m, v: ogc.clipped_gradient_ratio(t, m, v, base=base, gamma=gamma, q=q), (0, None, None))
  )


_fit = jax.jit(ogc.fit_two_gaussians)


# The grid ratio is 4 float32 sums of 1000 positive terms and a quotient: with pairwise summation a few ulp of
# relative error, plus the float32 rounding of the mixture parameters (up to 6e-8 relative) moving the weights
# exp(-z^2/2) by about z^2 * 6e-8 for z of a few units. 5e-6 bounds both.
RATIO_RTOL = 5e-6


def _search_cases():
  return [pytest.param(i, id=c["name"]) for i, c in enumerate(_fixture()["search_cases"])]


@pytest.mark.parametrize("index", _search_cases())
def test_threshold_search_matches_the_official_binary_search(index):
  case = _fixture()["search_cases"][index]
  means, variances = _components(case)
  calls = np.asarray(case["ratio_calls"])
  # The official ratio at every point its bisection evaluated (x_max, x_min, then the midpoints).
  ratio = _ratio(**_base_kwargs(case))(jnp.asarray(calls[:, 0], jnp.float32), means, variances)
  np.testing.assert_allclose(ratio, calls[:, 1], rtol=RATIO_RTOL)
  # Every bisection decision (the sign of target - ratio) is the official one, so the search ends at the same
  # point: the official float64 t rounded to float32 (within 1e-7 absolute).
  np.testing.assert_array_equal(np.sign(case["target"] - np.asarray(ratio)), np.sign(case["target"] - calls[:, 1]))
  t = _search(**_base_kwargs(case))(means, variances, case["lr"])
  np.testing.assert_allclose(float(t), case["threshold"], rtol=0, atol=1e-7)
  np.testing.assert_allclose(
    float(ogc.gradient_bound(t, **_base_kwargs(case))), case["tau"], rtol=1e-5
  )  # float32 |L'(t)| as the official code computes it


def _fit_cases():
  return [pytest.param(i, id=c["name"]) for i, c in enumerate(_fixture()["fit_cases"])]


def _within_ss(x, lower):
  return sum(np.sum(np.square(part - part.mean())) for part in (x[lower], x[~lower]))


@pytest.mark.parametrize("index", _fit_cases())
def test_mixture_fit_is_sklearns_em_from_the_exact_two_means_split(index):
  case = _fixture()["fit_cases"][index]
  x = np.asarray(case["queue"])
  official = case["fit_gmm"]
  steps = case["sklearn_steps"]
  assert case["sklearn_steps_max_abs_diff"] < 1e-12  # the k-means split is the only random part of fit_gmm
  ours = ogc._two_means(jnp.asarray(x, jnp.float32), jnp.ones(x.shape, bool))
  ours_lower = np.asarray(ours[:, 0], bool)
  kmeans_lower = x <= steps["kmeans_lower_max"]
  assert kmeans_lower.sum() == steps["kmeans_lower_count"]
  # Our split is the exact optimum of the 2-means objective; sklearn's Lloyd iterations stop near it.
  assert _within_ss(x, ours_lower) <= _within_ss(x, kmeans_lower) * (1 + 1e-6)
  means, variances, weights = _fit(x)
  if ours_lower.sum() != steps["kmeans_lower_count"]:
    pytest.skip(
      f"k-means stopped at a split of {steps['kmeans_lower_count']} (ours: {int(ours_lower.sum())}); the "
      "difference this makes is measured by scripts/ogc_em_vs_sklearn.py"
    )
  # Same start, same EM: float32 sums over 4096 losses (pairwise, ~12 roundings) through <= 10 steps.
  np.testing.assert_allclose(means, official["means"], rtol=1e-5)
  np.testing.assert_allclose(variances, official["covariances"], rtol=1e-4)
  np.testing.assert_allclose(weights, steps["weights"], rtol=1e-5)
  for key, expected in case["get_tau_t"].items():
    base, lr = key.split("/")
    t = _search(base)(means, variances, float(lr[2:]))
    np.testing.assert_allclose(float(t), expected["threshold"], rtol=0, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("index", _fit_cases())
def test_official_thresholds_from_sklearns_mixture(index):
  # The search on sklearn's own parameters reproduces get_tau_t whether or not our fit starts where k-means did.
  case = _fixture()["fit_cases"][index]
  means, variances = (np.asarray(case["fit_gmm"][k], np.float32) for k in ("means", "covariances"))
  for key, expected in case["get_tau_t"].items():
    base, lr = key.split("/")
    t = _search(base)(means, variances, float(lr[2:]))
    np.testing.assert_allclose(float(t), expected["threshold"], rtol=0, atol=1e-7, err_msg=key)


# --- the loss ------------------------------------------------------------------------------------------------


LOGITS = 3.0 * jax.random.normal(jax.random.key(0), (64, 10))
IDS = jax.random.randint(jax.random.key(1), (64,), 0, 10)


@pytest.mark.parametrize("base", ["fl", "gce"])
def test_official_value_jumps_by_one_minus_tau_t_and_the_gradients_agree(base):
  t = 0.3
  tau = float(ogc.gradient_bound(t, base=base))
  official = functools.partial(rl.optimized_gradient_clipping, threshold=t, base=base)
  continuous = functools.partial(official, official_value=False)
  p_y = np.asarray(jax.nn.softmax(LOGITS)[jnp.arange(64), IDS])
  below = p_y <= t
  assert below.any() and (~below).any()
  gap = np.asarray(official(LOGITS, IDS) - continuous(LOGITS, IDS))
  np.testing.assert_allclose(gap[below], 1.0 - tau * t, rtol=1e-5)
  np.testing.assert_array_equal(gap[~below], 0.0)
  grad = lambda fn: jax.jit(jax.grad(lambda z: fn(z, IDS).sum()))(LOGITS)
  np.testing.assert_allclose(grad(official), grad(continuous), rtol=1e-6, atol=1e-7)
  # The continuous value is continuous at p_y = t: rows with p_y just below and just above t.
  k = 10
  logit = np.log(np.array([t * (1 - 1e-4), t * (1 + 1e-4)]) * (k - 1) / (1 - np.array([t, t])))
  rows = np.zeros((2, k), np.float32)
  rows[:, 0] = logit
  edge = continuous(rows, np.zeros(2, np.int32))
  np.testing.assert_allclose(edge[0], edge[1], atol=1e-3 * tau * t)


@pytest.mark.parametrize("base", ["ce", "fl", "gce"])
def test_gradient_wrt_the_label_probability_is_clipped_at_tau(base):
  t = 0.4
  tau = float(ogc.gradient_bound(t, base=base))
  loss_of_p = lambda p: rl.optimized_gradient_clipping(
    jnp.log(jnp.stack([p, 1 - p], -1)), jnp.zeros(p.shape, jnp.int32), threshold=t, base=base
  )
  p = jnp.linspace(0.01, 0.99, 99)
  slope = jax.jit(jax.vmap(jax.grad(lambda p: loss_of_p(p[None])[0])))(p)
  exact = jax.jit(jax.vmap(jax.grad(lambda p: ogc._loss_of_p(p, base, 0.5, 0.7))))(p)
  np.testing.assert_allclose(slope, jnp.where(p <= t, -tau, exact), rtol=1e-4)
  assert np.all(np.abs(slope) <= tau * (1 + 1e-6))


def test_forward_mode_negative_ids_and_bad_hyperparameters():
  fn = functools.partial(rl.optimized_gradient_clipping, threshold=0.3, base="fl")
  tangent = jax.random.normal(jax.random.key(2), LOGITS.shape)
  total = lambda z: fn(z, IDS).sum()
  _, jvp = jax.jit(lambda z, v: jax.jvp(total, (z,), (v,)))(LOGITS, tangent)
  np.testing.assert_allclose(jvp, jnp.vdot(jax.jit(jax.grad(total))(LOGITS), tangent), rtol=1e-4)
  ignored = IDS.at[:5].set(-1)  # negative class ids: ignored examples
  per_example = fn(LOGITS, ignored)
  np.testing.assert_array_equal(per_example[:5], 0.0)
  np.testing.assert_allclose(per_example[5:], fn(LOGITS, IDS)[5:], rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(lambda z: fn(z, ignored).sum())(LOGITS)[:5], 0.0)
  with pytest.raises(ValueError, match=r"threshold=1.0 is out of range; valid range is \[1e-07, 1\]"):
    rl.optimized_gradient_clipping(LOGITS, IDS, threshold=1.0)
  with pytest.raises(ValueError, match=r"base='mae' is not a valid choice"):
    rl.get("optimized_gradient_clipping", base="mae")
  with pytest.raises(ValueError, match=r"q=0.0 is out of range; valid range is \(0, 1\]"):
    rl.ogc_threshold(base="gce", q=0.0)
  with pytest.raises(ValueError, match=r"refit_every=0 is out of range"):
    rl.ogc_threshold(refit_every=0)


# --- the threshold state -------------------------------------------------------------------------------------


def _batches(num_steps, batch, seed=3):
  """Per-step CE-like losses: 70 % near 0, 30 % around 2.5 (a clean and a noisy mode), and a padding mask."""
  rng = np.random.default_rng(seed)
  losses = np.where(rng.random((num_steps, batch)) < 0.7, rng.exponential(0.1, (num_steps, batch)), 2.5)
  losses = (losses + 0.3 * rng.standard_normal((num_steps, batch)) * (losses > 1)).astype(np.float32)
  where = rng.random((num_steps, batch)) < 0.9
  return losses, where


def _reference_schedule(losses, where, queue_size, refit_every, lr):
  """The official forward's bookkeeping with a deque: which steps refit, and on which queue."""
  queue = collections.deque(maxlen=queue_size)
  refits = []
  for step, (l, w) in enumerate(zip(losses, where), start=1):
    queue.extend(np.clip(l[w], ogc.MIN_LOSS, ogc.MAX_LOSS).tolist())
    if step % refit_every == 0 and len(queue) == queue_size:
      refits.append((step, np.array(queue)))
  return refits


def test_schedule_refits_every_s_steps_once_the_queue_is_full():
  losses, where = _batches(12, 32)
  q, s, lr = 128, 3, 0.05
  refits = dict(_reference_schedule(losses, where, q, s, lr))
  update = jax.jit(functools.partial(rl.ogc_threshold_update, learning_rate=lr, refit_every=s))
  state = rl.ogc_threshold_init(q)
  shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
  thresholds = []
  for step in range(1, len(losses) + 1):
    previous = state
    state = update(state, losses[step - 1], where=where[step - 1])
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == shapes  # fixed shapes: checkpointable
    assert int(state.step) == step
    valid = np.asarray(state.queue.valid())
    if step in refits:
      # The queue holds what the deque holds (as a set: a ring buffer rotates it).
      np.testing.assert_allclose(np.sort(np.asarray(state.queue.losses)[valid]), np.sort(refits[step]), rtol=1e-6)
      means, variances, _ = _fit(refits[step])
      np.testing.assert_allclose(state.means, means, rtol=1e-5)
      expected = _search("ce")(means, variances, lr)
      np.testing.assert_allclose(state.threshold, expected, atol=1e-7)
    else:
      chex.assert_trees_all_equal(
        (state.means, state.threshold), (previous.means, previous.threshold)
      )  # no refit: unchanged
    thresholds.append(float(state.threshold))
  np.testing.assert_array_equal(thresholds[: min(refits) - 1], np.float32(ogc.MIN_PROB))  # no clipping before
  assert thresholds[min(refits) - 1] > 1e-3  # the first refit clips: the two modes are far apart


def test_threshold_state_on_4_devices_equals_one_device():
  losses, where = _batches(8, 32, seed=4)
  kwargs = dict(learning_rate=0.1, refit_every=2)

  def run(update):
    state = rl.ogc_threshold_init(96)
    for l, w in zip(losses, where):
      state = update(state, l, w)
    return state

  single = run(jax.jit(lambda s, l, w: rl.ogc_threshold_update(s, l, where=w, **kwargs)))
  mesh = jax.make_mesh((4,), ("batch",))
  sharded = NamedSharding(mesh, P("batch"))
  state_spec = jax.tree.map(lambda _: P(), rl.ogc_threshold_init(96))
  update = jax.jit(
    jax.shard_map(
      lambda s, l, w: rl.ogc_threshold_update(s, l, where=w, axis_name="batch", **kwargs),
      mesh=mesh,
      in_specs=(state_spec, P("batch"), P("batch")),
      out_specs=state_spec,
    )
  )
  replicated = NamedSharding(mesh, P())
  state = jax.device_put(rl.ogc_threshold_init(96), replicated)
  for l, w in zip(losses, where):
    state = update(state, jax.device_put(l, sharded), jax.device_put(w, sharded))
  assert float(single.threshold) > 1e-3
  # The gathered global batch is the single device's batch in the same order: the same arithmetic.
  chex.assert_trees_all_close(jax.device_get(state), jax.device_get(single), rtol=1e-6, atol=1e-7)


def test_schedule_pair_binds_the_hyperparameters():
  schedule = rl.ogc_threshold(base="fl", queue_size=64, refit_every=2)
  losses, where = _batches(4, 32, seed=5)
  state, direct = schedule.init(), rl.ogc_threshold_init(64)
  bound = jax.jit(lambda s, l, w: schedule.update(s, l, learning_rate=0.01, where=w))
  unbound = jax.jit(
    lambda s, l, w: rl.ogc_threshold_update(s, l, learning_rate=0.01, where=w, base="fl", refit_every=2)
  )
  for l, w in zip(losses, where):
    state, direct = bound(state, l, w), unbound(direct, l, w)
  chex.assert_trees_all_equal(state, direct)
  assert float(state.threshold) > 1e-3
