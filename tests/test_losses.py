"""Properties every registered loss must have: jit == eager, leading batch dims, `where` masking, finite
values and gradients at extreme logits and for bfloat16 logits, and registry == direct call."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import robust_losses
from robust_losses import registry

K = 4
ETA = 0.3
# Symmetric-noise transition matrix: keep the label with prob. 1 - ETA, else a uniform other class.
T4 = (1 - ETA) * np.eye(K) + ETA / (K - 1) * (1 - np.eye(K))

# (id, registry name, hparams). Every registered name appears at least once (checked below); two get a
# second configuration to cover other code paths (another APL pair, per-element clipping). Defaults are
# covered in test_losses_values.py.
CASES = [
    ("softmax_cross_entropy", "softmax_cross_entropy", {}),
    ("sigmoid_binary_cross_entropy", "sigmoid_binary_cross_entropy", {}),
    ("mean_absolute_error", "mean_absolute_error", {}),
    ("mean_squared_error", "mean_squared_error", {}),
    ("focal_loss", "focal_loss", {}),
    ("bootstrapped_cross_entropy", "bootstrapped_cross_entropy", {"beta": 0.8, "mode": "hard"}),
    ("tamed_cross_entropy", "tamed_cross_entropy", {}),
    ("generalized_cross_entropy", "generalized_cross_entropy", {}),
    ("truncated_generalized_cross_entropy", "truncated_generalized_cross_entropy", {"k": 0.3}),
    ("reverse_cross_entropy", "reverse_cross_entropy", {}),
    ("symmetric_cross_entropy", "symmetric_cross_entropy", {"alpha": 6.0, "beta": 0.1}),
    ("normalized_cross_entropy", "normalized_cross_entropy", {}),
    ("normalized_focal_loss", "normalized_focal_loss", {}),
    ("normalized_generalized_cross_entropy", "normalized_generalized_cross_entropy", {}),
    ("active_passive_loss", "active_passive_loss", {}),
    ("apl_nfl_mae", "active_passive_loss", {"active": "nfl", "passive": "nmae", "alpha": 10.0, "beta": 0.1}),
    ("forward_corrected_cross_entropy", "forward_corrected_cross_entropy", {"transition_matrix": T4}),
    ("backward_corrected_cross_entropy", "backward_corrected_cross_entropy", {"transition_matrix": T4}),
    ("bi_tempered_logistic_loss", "bi_tempered_logistic_loss", {"t1": 0.8, "t2": 1.2}),
    ("binary_cross_entropy_dynamic_clipping", "binary_cross_entropy_dynamic_clipping", {}),
    ("bce_clip_per_element", "binary_cross_entropy_dynamic_clipping",
     {"per_element": True, "statistic": "median"}),
    ("clipped_cross_entropy", "clipped_cross_entropy", {"statistic": "quantile", "quantile": 0.7}),
    ("clipped_focal_loss", "clipped_focal_loss", {"statistic": "mean_std"}),
]
CASE_IDS = [c[0] for c in CASES]


def _data(shape=(2, 3), seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  logits = 2.0 * jax.random.normal(kx, (*shape, K))
  labels = jax.nn.one_hot(jax.random.randint(ky, shape, 0, K), K)
  return logits, labels


def _fn(name, hparams):
  return functools.partial(registry._LOSSES[name], **hparams)


def test_cases_cover_every_registered_loss():
  assert {name for _, name, _ in CASES} == set(robust_losses.names())


class VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_jit_and_eager_agree_with_leading_dims(self, name, hparams):
    logits, labels = _data()
    out = self.variant(_fn(name, hparams))(logits, labels)
    chex.assert_shape(out, (2, 3))
    chex.assert_type(out, jnp.float32)
    # Reference: the same examples as one flat batch, under jit. Leading dims are only a batch layout (for
    # the clipping losses the statistic is over all of them either way); the eager variant also checks
    # jit == eager.
    flat = jax.jit(_fn(name, hparams))(logits.reshape(6, K), labels.reshape(6, K))
    chex.assert_trees_all_close(out, flat.reshape(2, 3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_where_masks_examples_and_their_gradients(case):
  _, name, hparams = case
  fn = _fn(name, hparams)
  logits, labels = _data(seed=1)
  where = np.array([[True, False, True], [True, True, False]])
  # Padding may hold garbage: NaN logits in masked rows must not reach outputs or gradients.
  logits = jnp.where(where[..., None], logits, jnp.nan)

  @jax.jit
  def run(x):
    (_, losses), grads = jax.value_and_grad(
        lambda x: (lambda l: (l.sum(), l))(fn(x, labels, where=where)), has_aux=True)(x)
    return losses, grads, fn(x[where], labels[where])

  losses, grads, alone = run(logits)
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grads))
  np.testing.assert_array_equal(np.asarray(losses)[~where], 0.0)
  np.testing.assert_array_equal(np.asarray(grads)[~where], 0.0)
  # The kept examples get exactly the losses of a batch holding only them (for the clipping losses this
  # says masked examples do not enter the batch statistic).
  np.testing.assert_allclose(np.asarray(losses)[where], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_finite_at_extreme_logits_and_in_bfloat16(case):
  _, name, hparams = case
  fn = _fn(name, hparams)
  big = 1e4
  # Confidently right, confidently wrong (label on a -1e4 class), a tie, and all-equal logits.
  extreme = jnp.array([[big, -big, -big, -big], [big, -big, -big, -big], [big, big, -big, -big],
                       [-big, -big, -big, -big]])
  labels = jax.nn.one_hot(jnp.array([0, 2, 1, 3]), K)
  x16 = _data(shape=(4,), seed=2)[0].astype(jnp.bfloat16)

  def value_and_grad(x):
    return fn(x, labels), jax.grad(lambda x: fn(x, labels).sum())(x)

  @jax.jit
  def run(extreme, x16):
    return value_and_grad(extreme), value_and_grad(x16), fn(x16.astype(jnp.float32), labels)

  (losses, grads), (losses16, grads16), losses32 = run(extreme, x16)
  assert np.all(np.isfinite(losses)), losses
  assert np.all(np.isfinite(grads)), grads
  chex.assert_type(losses16, jnp.float32)
  chex.assert_type(grads16, jnp.bfloat16)
  assert np.all(np.isfinite(losses16)) and np.all(np.isfinite(np.asarray(grads16, np.float32)))
  # bf16 logits are upcast before any arithmetic: the losses of their float32 values.
  np.testing.assert_allclose(losses16, losses32, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_registry_round_trip(case):
  _, name, hparams = case
  logits, labels = _data(seed=3)
  where = jnp.array([[True, True, False], [True, True, True]])
  loss = robust_losses.get(name, **hparams)
  assert loss.name == name
  assert {k: v for k, v in loss.hparams.items() if k in hparams} == hparams

  @jax.jit
  def run(x, y, where):
    return (loss(x, y, where=where), _fn(name, hparams)(x, y, where=where),
            loss.call_with_aux(x, y, where=where))

  via_registry, direct, (with_aux, aux) = run(logits, labels, where)
  np.testing.assert_array_equal(via_registry, direct)
  np.testing.assert_array_equal(with_aux, direct)
  assert set(aux) == ({"clipped", "unclipped"} if loss.uses_batch_statistics else set())
  for value in aux.values():
    chex.assert_shape(value, (2, 3))
    chex.assert_type(value, jnp.float32)
