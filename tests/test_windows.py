"""Windows of recent losses and per-class statistics for dynamic clipping: ring buffers and thresholds against a
NumPy reference, masks and ignored examples, the clipping losses' window state, and 1 vs 4 devices."""

import collections
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import robust_losses as rl

K = 3
W = 6


def _stream(num_batches=5, batch=8, seed=0):
  """Batches of distinct losses with class ids (some negative: ignored) and a padding mask."""
  rng = np.random.default_rng(seed)
  losses = rng.permutation(np.linspace(0.05, 4.0, num_batches * batch)).astype(np.float32).reshape(num_batches, batch)
  ids = rng.integers(0, K, (num_batches, batch)).astype(np.int32)
  ids[rng.random(ids.shape) < 0.1] = -1
  where = rng.random(ids.shape) < 0.85
  return losses, ids, where


def _np_statistic(values, statistic, quantile=0.9, num_std=1.0):
  values = np.asarray(values, np.float64)
  median = np.median(values)
  return {
    "mean": values.mean(),
    "median": median,
    "quantile": np.quantile(values, quantile),
    "mean_std": values.mean() + num_std * values.std(),
    "mad": median + num_std * 1.4826 * np.median(np.abs(values - median)),
  }[statistic]


STATS = [
  ("mean", {}),
  ("median", {}),
  ("quantile", {"quantile": 0.75}),
  ("mean_std", {"num_std": 1.0}),
  ("mad", {"num_std": 2.0}),
]
STAT_IDS = [s for s, _ in STATS]


def test_pooled_window_is_the_last_w_valid_losses():
  losses, ids, where = _stream()
  window = rl.loss_window_init(W)
  reference = collections.deque(maxlen=W)
  update = jax.jit(rl.loss_window_update)
  for l, y, w in zip(losses, ids, where):
    window = update(window, l, labels=y, where=w)
    reference.extend(l[w & (y >= 0)].tolist())
    valid = np.asarray(window.valid())
    assert int(window.count) == len(reference)
    # Ring order: the oldest entry sits at `position` once full.
    ring = np.roll(np.asarray(window.losses), -int(window.position)) if len(reference) == W else window.losses
    np.testing.assert_array_equal(np.asarray(ring)[valid] if len(reference) < W else ring, list(reference))
  # A batch larger than the window keeps its last W valid entries, in order.
  big = np.arange(20, dtype=np.float32)
  window = rl.loss_window_update(rl.loss_window_init(W), big)
  np.testing.assert_array_equal(np.roll(np.asarray(window.losses), -int(window.position)), big[-W:])


def test_per_class_window_keeps_each_labels_last_w_losses():
  losses, ids, where = _stream(num_batches=6)
  window = rl.loss_window_init(W, num_classes=K)
  reference = [collections.deque(maxlen=W) for _ in range(K)]
  update = jax.jit(rl.loss_window_update)
  for l, y, w in zip(losses, ids, where):
    window = update(window, l, labels=jax.nn.one_hot(y, K) if y[0] % 2 else y, where=w)  # both label forms
    for c in range(K):
      reference[c].extend(l[w & (y == c)].tolist())
  for c in range(K):
    assert int(window.count[c]) == len(reference[c])
    row = np.asarray(window.losses[c])
    ring = np.roll(row, -int(window.position[c])) if len(reference[c]) == W else row[: len(reference[c])]
    np.testing.assert_array_equal(ring, list(reference[c]))


def _np_class_thresholds(values, ids, statistic, kwargs, min_count):
  pooled = _np_statistic(values, statistic, **kwargs)
  return np.array(
    [
      _np_statistic(values[ids == c], statistic, **kwargs) if np.sum(ids == c) >= min_count else pooled
      for c in range(K)
    ]
  )


@pytest.mark.parametrize("statistic,kwargs", STATS, ids=STAT_IDS)
def test_window_thresholds_match_numpy(statistic, kwargs):
  losses, ids, where = _stream(num_batches=7)
  pooled, per_class = rl.loss_window_init(16), rl.loss_window_init(20, num_classes=K)
  for l, y, w in zip(losses, ids, where):
    pooled = rl.loss_window_update(pooled, l, labels=y, where=w)
    per_class = rl.loss_window_update(per_class, l, labels=y, where=w)
  values = np.asarray(pooled.losses)[np.asarray(pooled.valid())]
  tau = rl.window_threshold(pooled, statistic=statistic, **kwargs)
  np.testing.assert_allclose(tau, _np_statistic(values, statistic, **kwargs), rtol=1e-6)
  # Per class; min_class_count above the smallest class's count exercises the pooled fallback.
  counts = np.asarray(per_class.count)
  min_count = int(counts.max())
  valid = np.asarray(per_class.valid())
  rows = [np.asarray(per_class.losses[c])[valid[c]] for c in range(K)]
  all_values = np.concatenate(rows)
  expected = [
    _np_statistic(rows[c], statistic, **kwargs)
    if counts[c] >= min_count
    else _np_statistic(all_values, statistic, **kwargs)
    for c in range(K)
  ]
  assert (counts < min_count).any()
  tau = rl.window_threshold(per_class, statistic=statistic, min_class_count=min_count, **kwargs)
  np.testing.assert_allclose(tau, expected, rtol=1e-6)


@pytest.mark.parametrize("statistic,kwargs", STATS, ids=STAT_IDS)
def test_class_thresholds_and_clipping_match_numpy(statistic, kwargs):
  losses, ids, where = (x.reshape(-1) for x in _stream(num_batches=4))
  kept = where & (ids >= 0)
  min_count = 7
  expected = _np_class_thresholds(losses[kept], ids[kept], statistic, kwargs, min_count)
  assert any(np.sum(ids[kept] == c) < min_count for c in range(K)) or min_count == 1
  tau = rl.class_thresholds(
    losses, ids, num_classes=K, statistic=statistic, min_class_count=min_count, where=where, **kwargs
  )
  np.testing.assert_allclose(tau, expected, rtol=1e-6)
  clip = functools.partial(
    rl.dynamic_clipping, statistic=statistic, per_class=True, min_class_count=min_count, **kwargs
  )
  clipped = clip(losses, labels=ids, num_classes=K, where=where)
  example_tau = expected[np.clip(ids, 0, K - 1)]
  np.testing.assert_allclose(clipped, np.where(kept, np.minimum(losses, example_tau), 0.0), rtol=1e-6)
  # One-hot labels have no negative ids: the ignored examples are masked instead.
  one_hot = functools.partial(clip, labels=jax.nn.one_hot(np.maximum(ids, 0), K))
  np.testing.assert_allclose(one_hot(losses, where=kept), clipped, rtol=1e-6)
  # Only the unclipped kept examples carry gradient, with slope 1.
  grad = jax.grad(lambda l: clip(l, labels=ids, num_classes=K, where=where).sum())(jnp.asarray(losses))
  np.testing.assert_array_equal(grad, (kept & (losses <= example_tau)).astype(np.float32))


def test_dynamic_clipping_with_a_window_clips_this_batch_at_the_windows_threshold():
  losses, ids, where = _stream(num_batches=3)
  window = rl.loss_window_init(12)
  for l, y, w in zip(losses, ids, where):
    clipped, tau, window = rl.dynamic_clipping(
      l, statistic="median", labels=y, where=w, window=window, return_threshold=True
    )
    values = np.asarray(window.losses)[np.asarray(window.valid())]
    np.testing.assert_allclose(tau, np.median(values), rtol=1e-6)
    kept = w & (y >= 0)
    np.testing.assert_allclose(clipped, np.where(kept, np.minimum(l, float(tau)), 0.0), rtol=1e-6)
  # Without return_threshold: (clipped, window); the defaults stay the per-batch statistic.
  out = rl.dynamic_clipping(losses[0], statistic="median", window=rl.loss_window_init(4))
  assert isinstance(out, tuple) and isinstance(out[1], rl.LossWindow)
  np.testing.assert_allclose(
    rl.dynamic_clipping(losses[0], statistic="median"), np.minimum(losses[0], np.median(losses[0])), rtol=1e-6
  )


def test_clipping_losses_thread_the_window_through_aux():
  logits = 2.0 * jax.random.normal(jax.random.key(0), (4, 16, K))
  ids = jax.random.randint(jax.random.key(1), (4, 16), 0, K)
  window = rl.loss_window_init(W, num_classes=K)
  options = dict(statistic="median", per_class=True, min_class_count=3)

  @jax.jit
  def step(z, y, window, epoch):
    losses, aux = rl.clipped_cross_entropy(
      z, y, warmup_epochs=1, epoch=epoch, window=window, return_aux=True, **options
    )
    ce = rl.softmax_cross_entropy(z, y)
    expected, _, expected_window = rl.dynamic_clipping(ce, labels=y, window=window, return_threshold=True, **options)
    return losses, aux["window"], ce, expected, expected_window

  for i in range(4):
    losses, new_window, ce, expected, window = step(logits[i], ids[i], window, jnp.asarray(i))
    chex.assert_trees_all_close(new_window, window)  # the warm-up step fills the window too
    np.testing.assert_allclose(losses, ce if i == 0 else expected, rtol=1e-6)
  # Through the registry: per_class and min_class_count are hyperparameters.
  loss = rl.get(
    "binary_cross_entropy_dynamic_clipping", statistic="median", per_class=True, min_class_count=2, warmup_epochs=0
  )
  bce = rl.sigmoid_binary_cross_entropy(logits[0], ids[0])
  expected = rl.dynamic_clipping(
    bce, statistic="median", per_class=True, min_class_count=2, labels=ids[0], num_classes=K
  )
  np.testing.assert_allclose(loss(logits[0], ids[0]), expected, rtol=1e-6)


def test_bad_window_and_per_class_arguments():
  losses = jnp.arange(6.0)
  with pytest.raises(ValueError, match="per_class=True needs the labels"):
    rl.dynamic_clipping(losses, per_class=True)
  with pytest.raises(ValueError, match="with class ids need num_classes"):
    rl.dynamic_clipping(losses, per_class=True, labels=jnp.zeros(6, jnp.int32))
  with pytest.raises(ValueError, match=r"a per-class window .* needs per_class=True"):
    rl.dynamic_clipping(losses, labels=jnp.zeros(6, jnp.int32), window=rl.loss_window_init(4, num_classes=2))
  with pytest.raises(ValueError, match="class id 5 is out of range for a window of 2 classes"):
    rl.loss_window_update(rl.loss_window_init(4, num_classes=2), losses, labels=jnp.array([0, 1, 5, 0, 1, 0]))
  with pytest.raises(ValueError, match="per_element=True clips"):
    rl.binary_cross_entropy_dynamic_clipping(
      jnp.zeros((6, 2)), jnp.zeros(6, jnp.int32), per_element=True, per_class=True, warmup_epochs=0
    )
  with pytest.raises(ValueError, match=r"min_class_count=0 is out of range"):
    rl.get("clipped_cross_entropy", per_class=True, min_class_count=0)
  with pytest.raises(ValueError, match=r"size=0 is out of range"):
    rl.loss_window_init(0)


# --- data parallelism: the global batch on 4 devices ---------------------------------------------------------

# The sort-free CPU quantile (median, quantile, mad) is one code path; the mode-seeking ones have no NumPy twin.
DP_STATS = [("mean_std", {"num_std": 1.0}), ("quantile", {"quantile": 0.75}), ("gmm", {"num_std": 1.0}), ("otsu", {})]


@pytest.mark.parametrize("statistic,kwargs", DP_STATS, ids=[s for s, _ in DP_STATS])
def test_per_class_and_window_statistics_on_4_devices_equal_one_device(statistic, kwargs):
  losses, ids, where = _stream(num_batches=3, batch=16, seed=1)
  clip = functools.partial(
    rl.dynamic_clipping, statistic=statistic, per_class=True, min_class_count=4, return_threshold=True, **kwargs
  )

  def run(step, window):
    outputs = []
    for l, y, w in zip(losses, ids, where):
      clipped, tau, window = step(window, l, y, w)
      outputs.append((clipped, tau))
    return outputs, window

  single = run(jax.jit(lambda s, l, y, w: clip(l, labels=y, where=w, window=s)), rl.loss_window_init(8, num_classes=K))
  mesh = jax.make_mesh((4,), ("batch",))
  spec = jax.tree.map(lambda _: P(), rl.loss_window_init(8, num_classes=K))
  sharded = jax.jit(
    jax.shard_map(
      lambda s, l, y, w: clip(l, labels=y, where=w, window=s, axis_name="batch"),
      mesh=mesh,
      in_specs=(spec, P("batch"), P("batch"), P("batch")),
      out_specs=(P("batch"), P(), spec),
    )
  )
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("batch")))
  multi = run(
    lambda s, l, y, w: sharded(s, put(l), put(y), put(w)),
    jax.device_put(rl.loss_window_init(8, num_classes=K), NamedSharding(mesh, P())),
  )
  chex.assert_trees_all_close(jax.device_get(multi), jax.device_get(single), rtol=1e-6, atol=1e-7)
  # The per-class batch statistic (no window) too.
  batch_tau = functools.partial(rl.class_thresholds, num_classes=K, statistic=statistic, min_class_count=4, **kwargs)
  expected = batch_tau(losses[0], ids[0], where=where[0])
  tau = jax.jit(
    jax.shard_map(
      lambda l, y, w: batch_tau(l, y, where=w, axis_name="batch"),
      mesh=mesh,
      in_specs=(P("batch"),) * 3,
      out_specs=P(),
    )
  )(put(losses[0]), put(ids[0]), put(where[0]))
  np.testing.assert_allclose(tau, expected, rtol=1e-6)
