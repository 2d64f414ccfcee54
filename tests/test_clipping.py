"""Dynamic clipping: thresholds vs NumPy, gradients, masking, and global-batch statistics on 4 devices."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import robust_losses as rl

# 16 losses as an [8, 2] global batch (8 examples x 2 "positions", to exercise leading dims), distinct
# values so that every statistic is unambiguous.
LOSSES = np.random.default_rng(0).permutation(np.linspace(0.1, 3.2, 16)).astype(np.float32).reshape(8, 2)
# Padding in the middle and at the end, as a data-parallel batch would have; padded values are NaN, so
# letting them into the statistic, the output or the gradient would show.
WHERE = np.ones((8, 2), bool)
WHERE[[3, 7]] = False
WHERE[5, 1] = False
LOSSES_WITH_PADDING = np.where(WHERE, LOSSES, np.nan).astype(np.float32)

STAT_CASES = [
  ("mean", {}),
  ("median", {}),
  ("quantile", {"quantile": 0.9}),
  ("quantile", {"quantile": 0.25}),
  ("mean_std", {"num_std": 1.0}),
  ("mean_std", {"num_std": 0.5}),
  ("mad", {"num_std": 2.0}),
]
STAT_IDS = [f"{s}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" if kw else s for s, kw in STAT_CASES]


def np_threshold(values, statistic, quantile=0.9, num_std=1.0):
  values = np.asarray(values, np.float64).ravel()
  median = np.median(values)
  return {
    "mean": values.mean(),
    "median": median,
    "quantile": np.quantile(values, quantile),
    "mean_std": values.mean() + num_std * values.std(),
    "mad": median + num_std * 1.4826 * np.median(np.abs(values - median)),
  }[statistic]


@pytest.mark.parametrize("statistic,kwargs", STAT_CASES, ids=STAT_IDS)
def test_threshold_and_clipping_match_numpy(statistic, kwargs):
  clipped, tau = rl.dynamic_clipping(LOSSES, statistic=statistic, return_threshold=True, **kwargs)
  expected_tau = np_threshold(LOSSES, statistic, **kwargs)
  np.testing.assert_allclose(tau, expected_tau, rtol=1e-6)
  np.testing.assert_allclose(clipped, np.minimum(LOSSES, expected_tau), rtol=1e-6)
  chex.assert_shape(clipped, LOSSES.shape)
  chex.assert_shape(tau, ())


@pytest.mark.parametrize("statistic,kwargs", STAT_CASES, ids=STAT_IDS)
def test_where_excludes_padding_from_threshold(statistic, kwargs):
  clipped, tau = rl.dynamic_clipping(
    LOSSES_WITH_PADDING, statistic=statistic, where=WHERE, return_threshold=True, **kwargs
  )
  expected_tau = np_threshold(LOSSES[WHERE], statistic, **kwargs)
  np.testing.assert_allclose(tau, expected_tau, rtol=1e-6)
  np.testing.assert_allclose(clipped, np.where(WHERE, np.minimum(LOSSES, expected_tau), 0.0), rtol=1e-6)


def test_gradient_is_indicator_of_unclipped_samples():
  # d(sum of clipped)/d(losses) = 1 below tau and 0 above: tau carries no gradient (with mean, every
  # loss would otherwise get a 1/n share of each clipped sample's gradient).
  for statistic in ("mean", "median", "mean_std"):
    grad = jax.grad(lambda l: rl.dynamic_clipping(l, statistic=statistic, num_std=1.0).sum())(jnp.asarray(LOSSES))
    tau = np_threshold(LOSSES, statistic)
    np.testing.assert_array_equal(grad, (LOSSES <= tau).astype(np.float32))
  grad = jax.grad(lambda l: rl.dynamic_clipping(l, statistic="mean", where=WHERE).sum())(
    jnp.asarray(LOSSES_WITH_PADDING)
  )
  np.testing.assert_array_equal(grad, (WHERE & (LOSSES <= LOSSES[WHERE].mean())).astype(np.float32))


def test_clipped_samples_get_zero_gradient_wrt_logits():
  logits = jax.random.normal(jax.random.key(0), (6, 4)) * 3
  labels = jax.nn.one_hot(jnp.arange(6) % 4, 4)
  ce = rl.softmax_cross_entropy(logits, labels)
  grad = jax.grad(lambda x: rl.clipped_cross_entropy(x, labels, statistic="mean", warmup_epochs=0).sum())(logits)
  ce_grad = jax.grad(lambda x: rl.softmax_cross_entropy(x, labels).sum())(logits)
  clipped = np.asarray(ce > ce.mean())
  assert clipped.any() and (~clipped).any()
  np.testing.assert_array_equal(grad[clipped], 0.0)
  np.testing.assert_allclose(grad[~clipped], ce_grad[~clipped], rtol=1e-6)


def test_all_masked_gives_zero_threshold_and_losses():
  for statistic in ("mean", "median", "mean_std"):
    clipped, tau = rl.dynamic_clipping(LOSSES, statistic=statistic, where=np.zeros_like(WHERE), return_threshold=True)
    assert float(tau) == 0.0
    np.testing.assert_array_equal(clipped, 0.0)


def test_call_with_aux_reports_clipped_and_unclipped():
  logits = jax.random.normal(jax.random.key(1), (6, 4)) * 3
  labels = jax.nn.one_hot(jnp.arange(6) % 4, 4)
  where = np.array([True, True, True, True, True, False])
  loss = rl.get("clipped_cross_entropy", statistic="median", warmup_epochs=0)  # clips from the first step
  assert loss.uses_batch_statistics and not loss.uses_example_weights
  losses, aux = loss.call_with_aux(logits, labels, where=where)
  ce = np.asarray(rl.softmax_cross_entropy(logits, labels))
  tau = np.median(ce[where])
  np.testing.assert_allclose(aux["unclipped"], np.where(where, ce, 0.0), rtol=1e-6)
  np.testing.assert_array_equal(aux["clipped"], (where & (ce > tau)).astype(np.float32))
  np.testing.assert_allclose(losses, np.where(where, np.minimum(ce, tau), 0.0), rtol=1e-6)
  # Per-element BCE clipping reports the fraction of each example's classes that were clipped.
  _, aux = rl.get(
    "binary_cross_entropy_dynamic_clipping", per_element=True, statistic="mean", warmup_epochs=0
  ).call_with_aux(logits, labels)
  s = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  elements = -np.asarray(labels) * np.log(s) - (1 - np.asarray(labels)) * np.log(1 - s)
  np.testing.assert_allclose(aux["clipped"], (elements > elements.mean()).mean(-1), rtol=1e-6)


# --- data parallelism: statistics over the global batch --------------------------------------------


def _mesh(axis_type):
  return jax.make_mesh((4,), ("batch",), axis_types=None if axis_type is None else (axis_type,))


# The mode-seeking statistics have no NumPy twin; on devices they must equal their single-device value.
MODE_CASES = [("otsu", {}), ("gmm", {"num_std": 1.0})]
DP_CASES = [(s, kw, masked) for (s, kw) in STAT_CASES + MODE_CASES for masked in (False, True)]
DP_IDS = [f"{i}-{'masked' if m else 'full'}" for i in STAT_IDS + ["otsu", "gmm"] for m in (False, True)]


def _single_device(statistic, kwargs, masked):
  losses = LOSSES_WITH_PADDING if masked else LOSSES
  where = WHERE if masked else None
  return losses, where, rl.dynamic_clipping(losses, statistic=statistic, where=where, return_threshold=True, **kwargs)


@pytest.mark.parametrize("statistic,kwargs,masked", DP_CASES, ids=DP_IDS)
def test_shard_map_equals_single_device(statistic, kwargs, masked):
  losses, where, (expected, expected_tau) = _single_device(statistic, kwargs, masked)
  mesh = jax.make_mesh((4,), ("batch",))  # the default (Explicit) axis types
  # With Explicit axes shard_map wants its inputs already laid out as in_specs says.
  losses = jax.device_put(losses, NamedSharding(mesh, P("batch")))
  where = None if where is None else jax.device_put(where, NamedSharding(mesh, P("batch")))
  clip = functools.partial(rl.dynamic_clipping, statistic=statistic, axis_name="batch", return_threshold=True, **kwargs)
  if masked:
    fn = jax.shard_map(
      lambda l, w: clip(l, where=w), mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=(P("batch"), P())
    )
    clipped, tau = jax.jit(fn)(losses, where)
  else:
    fn = jax.shard_map(clip, mesh=mesh, in_specs=P("batch"), out_specs=(P("batch"), P()))
    clipped, tau = jax.jit(fn)(losses)
  np.testing.assert_allclose(tau, expected_tau, rtol=1e-6)
  np.testing.assert_allclose(clipped, expected, rtol=1e-6)


@pytest.mark.parametrize("axis_type", [None, jax.sharding.AxisType.Auto], ids=["explicit", "auto"])
@pytest.mark.parametrize(
  "statistic,kwargs,masked", [DP_CASES[i] for i in (0, 3, 5, 9)], ids=[DP_IDS[i] for i in (0, 3, 5, 9)]
)
def test_jit_with_sharded_inputs_equals_single_device(statistic, kwargs, masked, axis_type):
  losses, where, (expected, expected_tau) = _single_device(statistic, kwargs, masked)
  sharding = NamedSharding(_mesh(axis_type), P("batch"))
  losses = jax.device_put(losses, sharding)
  where = None if where is None else jax.device_put(where, sharding)
  clipped, tau = jax.jit(functools.partial(rl.dynamic_clipping, statistic=statistic, return_threshold=True, **kwargs))(
    losses, where=where
  )
  np.testing.assert_allclose(tau, expected_tau, rtol=1e-6)
  np.testing.assert_allclose(clipped, expected, rtol=1e-6)


@pytest.mark.parametrize(
  "name,hparams",
  [
    ("clipped_cross_entropy", {"statistic": "quantile", "quantile": 0.75, "warmup_epochs": 0}),
    ("binary_cross_entropy_dynamic_clipping", {"statistic": "median", "per_element": True, "warmup_epochs": 0}),
    ("clipped_focal_loss", {"statistic": "mean_std", "warmup_epochs": 0}),
  ],
)
def test_registry_losses_in_shard_map_with_vmapped_replicas(name, hparams):
  # The training loop's layout: shard_map over devices, vmap over independent replicas (seeds) inside,
  # call_with_aux with axis_name; per-replica statistics over that replica's global batch.
  loss = rl.get(name, **hparams)
  replicas, batch, k = 2, 8, 4
  logits = 3 * jax.random.normal(jax.random.key(2), (replicas, batch, k))
  labels = jax.nn.one_hot(jax.random.randint(jax.random.key(3), (replicas, batch), 0, k), k)
  where = np.ones((replicas, batch), bool)
  where[:, 5] = False

  def per_device(x, y, w):
    return jax.vmap(lambda x, y, w: loss.call_with_aux(x, y, where=w, axis_name="batch"))(x, y, w)

  spec = P(None, "batch")
  # Auto axis types, as experiments/train_lib.make_mesh builds the training mesh.
  mesh = _mesh(jax.sharding.AxisType.Auto)
  fn = jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)
  losses, aux = jax.jit(fn)(logits, labels, where)
  expected, expected_aux = jax.vmap(lambda x, y, w: loss.call_with_aux(x, y, where=w))(logits, labels, where)
  chex.assert_trees_all_close((losses, aux), (expected, expected_aux), rtol=1e-6, atol=1e-7)


def test_bad_clipping_hyperparameters():
  with pytest.raises(ValueError, match=r"statistic='max' is not a valid choice; valid choices are"):
    rl.dynamic_clipping(LOSSES, statistic="max")
  with pytest.raises(ValueError, match=r"quantile=1.0 is out of range; valid range is \(0, 1\)"):
    rl.dynamic_clipping(LOSSES, statistic="quantile", quantile=1.0)
  with pytest.raises(ValueError, match=r"num_std=-1.0 is out of range; valid range is \[0, inf\)"):
    rl.get("clipped_cross_entropy", statistic="mean_std", num_std=-1.0)


def _bimodal(n_clean, n_noisy, seed=0):
  rng = np.random.default_rng(seed)
  return np.concatenate([np.exp(rng.normal(-3.0, 0.7, n_clean)), np.exp(rng.normal(1.0, 0.4, n_noisy))]).astype(
    np.float32
  )


@pytest.mark.parametrize("noisy_share", [0.1, 0.25, 0.4])
def test_gmm_clips_the_noisy_mode_whatever_its_size(noisy_share):
  n = 400
  losses = _bimodal(int(n * (1 - noisy_share)), int(n * noisy_share))
  is_noisy = np.arange(n) >= int(n * (1 - noisy_share))
  _, tau = rl.dynamic_clipping(losses, statistic="gmm", num_std=3.0, return_threshold=True)
  clipped = losses > float(tau)
  # The modes are ~6 pooled stds apart in log space: the split is the mode boundary, not a fixed share.
  assert (clipped == is_noisy).mean() > 0.98
  _, q90 = rl.dynamic_clipping(losses, statistic="quantile", quantile=0.9, return_threshold=True)
  assert abs((losses > float(q90)).mean() - 0.1) < 0.01  # a quantile clips 10% whatever the noise


def test_gmm_clips_nothing_in_a_unimodal_batch_but_otsu_always_splits():
  losses = np.exp(np.random.default_rng(1).normal(-3.0, 0.7, 400)).astype(np.float32)
  clipped, tau = rl.dynamic_clipping(losses, statistic="gmm", num_std=3.0, return_threshold=True)
  np.testing.assert_array_equal(clipped, losses)
  assert float(tau) == losses.max()
  _, otsu = rl.dynamic_clipping(losses, statistic="otsu", return_threshold=True)
  assert 0.05 < (losses > float(otsu)).mean() < 0.95


def test_cpu_quantile_without_sort_is_numpy_quantile_exactly():
  # The CPU path finds order statistics by bisection on the float bits: ties, negatives, zeros of both
  # signs and wide ranges must give exactly what a sort gives.
  # Batches of 1-199 valid entries are padded to one length (masked out), so the trials share compilations.
  rng = np.random.default_rng(3)
  threshold = {
    q: jax.jit(lambda x, valid, q=q: rl.batch_threshold(x, statistic="quantile", quantile=q, where=valid))
    for q in (0.1, 0.5, 0.9, 0.37)
  }
  for trial in range(50):
    n = int(rng.integers(1, 200))
    x = (rng.normal(size=n) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    if trial % 3 == 0:
      x = np.round(x, 1)
    x[: n // 4] = -np.abs(x[: n // 4])
    if n > 3:
      x[1], x[2] = 0.0, -0.0
    valid = rng.random(n) < 0.8
    valid[0] = True
    q = float(rng.choice(list(threshold)))
    padding = 200 - n
    tau = threshold[q](
      np.pad(x, (0, padding), constant_values=np.float32(rng.normal() * 1e3)), np.pad(valid, (0, padding))
    )
    ordered = np.sort(x[valid])
    pos = q * (len(ordered) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    expected = ordered[lo] + np.float32(pos - lo) * (ordered[hi] - ordered[lo])
    np.testing.assert_allclose(float(tau), expected, rtol=1e-6, atol=1e-30)


# --- the defaults by name alone ------------------------------------------------------------------------------

RECOMMENDED = {
  "binary_cross_entropy_dynamic_clipping": (rl.sigmoid_binary_cross_entropy, 4.0),
  "clipped_cross_entropy": (rl.softmax_cross_entropy, 3.0),
}


def _batch_with_flipped_labels():
  """64 confident correct predictions, 8 of them (the first) with a wrong label: a separate high-loss mode."""
  rng = np.random.default_rng(0)
  batch, k, flipped = 64, 10, 8
  true = rng.integers(0, k, batch)
  logits = (8.0 * np.eye(k)[true] - 4.0 + 0.3 * rng.normal(size=(batch, k))).astype(np.float32)
  labels = true.copy()
  labels[:flipped] = (labels[:flipped] + 1 + rng.integers(0, k - 1, flipped)) % k
  return logits, labels, np.arange(batch) < flipped


@pytest.mark.parametrize("name", RECOMMENDED)
def test_the_loss_by_name_alone_is_the_recommended_configuration(name):
  # docs/RESULTS.md: the mixture statistic (separation 4 for BCE, 3 for CE) after a 5-epoch warm-up.
  base, num_std = RECOMMENDED[name]
  loss = rl.get(name)
  assert {k: loss.hparams[k] for k in ("statistic", "num_std", "warmup_epochs")} == {
    "statistic": "gmm",
    "num_std": num_std,
    "warmup_epochs": 5,
  }
  logits, labels, flipped = _batch_with_flipped_labels()
  # The warm-up follows the epoch; without it the call is an error that names both ways out.
  with pytest.raises(ValueError, match=rf"{name}: warmup_epochs=5 needs the epoch: pass epoch=.*or warmup_epochs=0"):
    loss(logits, labels)
  unclipped = base(logits, labels)
  step = jax.jit(lambda z, y, epoch: loss.call_with_aux(z, y, epoch=epoch))  # the epoch traced, as in training
  for epoch in range(5):  # warming up: the unclipped loss, nothing reported clipped
    losses, aux = step(logits, labels, epoch)
    np.testing.assert_array_equal(losses, aux["unclipped"])
    np.testing.assert_array_equal(aux["clipped"], 0.0)
    # The same per-example loss as the base loss; the two may round differently in the last float32 bit.
    np.testing.assert_allclose(losses, unclipped, rtol=1e-6)
  for epoch in (5, 6, 30):  # then the mixture clips the flipped labels' mode, and only it
    losses, aux = step(logits, labels, epoch)
    np.testing.assert_array_equal(aux["clipped"], flipped.astype(np.float32))
    tau = float(np.max(np.asarray(losses)[flipped]))
    np.testing.assert_array_equal(np.asarray(losses)[flipped], tau)  # each contributes the constant tau
    assert tau < float(np.min(np.asarray(aux["unclipped"])[flipped]))
    np.testing.assert_array_equal(np.asarray(losses)[~flipped], np.asarray(aux["unclipped"])[~flipped])
