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
  ("bce_clip_per_element", "binary_cross_entropy_dynamic_clipping", {"per_element": True, "statistic": "median"}),
  ("clipped_cross_entropy", "clipped_cross_entropy", {"statistic": "quantile", "quantile": 0.7}),
  ("clipped_focal_loss", "clipped_focal_loss", {"statistic": "mean_std"}),
  ("oracle_small_loss_selection", "oracle_small_loss_selection", {"noise_rate": 0.3}),
  ("clip_gmm", "binary_cross_entropy_dynamic_clipping", {"statistic": "gmm", "num_std": 1.0}),
  ("clip_mad", "clipped_cross_entropy", {"statistic": "mad", "num_std": 2.0}),
  ("clip_otsu", "clipped_cross_entropy", {"statistic": "otsu"}),
  ("normalized_negative_cross_entropy", "normalized_negative_cross_entropy", {}),
  ("normalized_negative_focal_loss", "normalized_negative_focal_loss", {}),
  ("active_negative_loss", "active_negative_loss", {}),
  ("active_negative_loss_entropy_regularized", "active_negative_loss_entropy_regularized", {}),
  ("anl_fl_detached", "active_negative_loss", {"active": "nfl", "detach_modulator": True}),
  ("asymmetric_generalized_cross_entropy", "asymmetric_generalized_cross_entropy", {}),
  ("asymmetric_unhinged_loss", "asymmetric_unhinged_loss", {}),
  ("asymmetric_exponential_loss", "asymmetric_exponential_loss", {}),
  ("asymmetric_norm_loss", "asymmetric_norm_loss", {}),
  ("nce_asymmetric_loss", "nce_asymmetric_loss", {}),
  ("nce_aul", "nce_asymmetric_loss", {"passive": "aul", "a": 6.3}),
  ("nce_ael", "nce_asymmetric_loss", {"passive": "ael", "a": 5.0}),
  ("nce_anorm", "nce_asymmetric_loss", {"passive": "anorm", "alpha": 1.0, "beta": 1.0, "a": 2.0, "q": 0.7}),
  ("asymmetric_mean_squared_error", "asymmetric_mean_squared_error", {}),
  ("joint_asymmetric_loss", "joint_asymmetric_loss", {}),
  ("jal_fl", "joint_asymmetric_loss", {"active": "nfl"}),
  ("epsilon_softmax_cross_entropy", "epsilon_softmax_cross_entropy", {}),
  ("eps_ce_no_floor", "epsilon_softmax_cross_entropy", {"min_prob": 0.0, "m": 0.0}),
  ("epsilon_softmax_cross_entropy_mae", "epsilon_softmax_cross_entropy_mae", {}),
  ("ldr_kl_loss", "ldr_kl_loss", {}),
  ("ldr_kl_lam1", "ldr_kl_loss", {"lam": 1.0}),
  ("jensen_shannon_divergence", "jensen_shannon_divergence", {}),
  ("generalized_jensen_shannon_divergence", "generalized_jensen_shannon_divergence", {}),
  ("gjs_three_views", "generalized_jensen_shannon_divergence", {"js_weights": (0.4, 0.2, 0.2, 0.2)}),
  ("taylor_cross_entropy", "taylor_cross_entropy", {"order": 3}),
  ("logit_clipping", "logit_clipping", {"tau": 1.5}),
  ("logit_clipping_official", "logit_clipping", {"tau": 1.5, "official_threshold": True}),
  ("partially_huberised_cross_entropy", "partially_huberised_cross_entropy", {}),
  ("partially_huberised_generalized_cross_entropy", "partially_huberised_generalized_cross_entropy", {}),
  ("early_learning_regularization", "early_learning_regularization", {}),
  ("sparse_regularization", "sparse_regularization", {}),
  ("optimized_gradient_clipping", "optimized_gradient_clipping", {"threshold": 0.3}),
  ("ogc_fl", "optimized_gradient_clipping", {"threshold": 0.5, "base": "fl"}),
  ("ogc_gce_continuous", "optimized_gradient_clipping", {"threshold": 0.4, "base": "gce", "official_value": False}),
  ("clip_per_class", "clipped_cross_entropy", {"statistic": "median", "per_class": True, "min_class_count": 2}),
]
CASE_IDS = [c[0] for c in CASES]


def _views(case_id):
  """() for a loss of one view, else (M,): the leading axis of the M views of its logits (GJS)."""
  _, name, hparams = CASES[CASE_IDS.index(case_id)]
  num_views = robust_losses.get(name, **hparams).num_views
  return () if num_views == 1 else (num_views,)


def _with_views(logits, views, seed=1):
  """The logits of every view: the first is `logits`, the others perturbed copies (other augmentations)."""
  if not views:
    return logits
  noise = jax.random.normal(jax.random.key(seed), (views[0] - 1, *logits.shape), logits.dtype)
  return jnp.concatenate([logits[None], logits[None] + noise.astype(logits.dtype)])


def _data(shape=(2, 3), seed=0, views=()):
  kx, ky = jax.random.split(jax.random.key(seed))
  logits = 2.0 * jax.random.normal(kx, (*shape, K))
  labels = jax.nn.one_hot(jax.random.randint(ky, shape, 0, K), K)
  return _with_views(logits, views), labels


def _extras(name, hparams, logits, labels):
  """What a training loop gives the losses with a schedule or state, as a function of the batch so that any
  subset of examples gets the same rows: SR's epoch, the clipping losses' epoch, ELR's targets, truncated
  Lq's weights (the ones the loop's refresh would compute from these logits)."""
  if name == "sparse_regularization":
    return {"epoch": 3}
  if name in ("binary_cross_entropy_dynamic_clipping", "clipped_cross_entropy", "clipped_focal_loss"):
    return {"epoch": 5}  # their default warm-up of 5 epochs is over: the loss clips
  if name == "early_learning_regularization":
    return {"targets": jnp.full(jnp.shape(logits), 0.1, jnp.float32)}
  if name == "truncated_generalized_cross_entropy":
    return {"weights": robust_losses.truncated_lq_prune_weights(logits, labels, k=hparams.get("k", 0.5))}
  return {}


def _fn(name, hparams):
  fn = getattr(robust_losses, name)
  return lambda logits, labels, **kw: fn(logits, labels, **hparams, **_extras(name, hparams, logits, labels), **kw)


def _registry_kwargs(loss, logits, labels):
  """`_extras` as the Loss object takes them (state rows under example_state)."""
  extras = _extras(loss.name, loss.hparams, logits, labels)
  epoch = extras.pop("epoch", None)
  return {"epoch": epoch, "example_state": extras or None}


def test_cases_cover_every_registered_loss():
  assert {name for _, name, _ in CASES} == set(robust_losses.names())


@functools.lru_cache(maxsize=None)
def _eager(case_id):
  _, name, hparams = CASES[CASE_IDS.index(case_id)]
  return _fn(name, hparams)(*_data(views=_views(case_id)))


class VariantsTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(case_id, case_id) for case_id in CASE_IDS])
  def test_jit_and_eager_agree(self, case_id):
    _, name, hparams = CASES[CASE_IDS.index(case_id)]
    out = self.variant(_fn(name, hparams))(*_data(views=_views(case_id)))
    chex.assert_shape(out, (2, 3))
    chex.assert_type(out, jnp.float32)
    chex.assert_trees_all_close(out, _eager(case_id), rtol=1e-5, atol=1e-6)


# The remaining properties are computed once per case and cached, then checked by separate tests. The
# gradients are taken in one jitted program per case; the forward-only checks run eagerly, where JAX's
# per-operation cache is shared by all cases (compiling is what makes these tests slow).
WHERE = np.array([[True, False, True], [True, True, False]])
BIG = 1e4
# Confidently right, confidently wrong (label on a -1e4 class), a tie, and all-equal logits; given in
# bfloat16 (1e4 rounds to 9984), which also checks that half-precision logits are upcast.
EXTREME = jnp.array(
  [[BIG, -BIG, -BIG, -BIG], [BIG, -BIG, -BIG, -BIG], [BIG, BIG, -BIG, -BIG], [-BIG, -BIG, -BIG, -BIG]], jnp.bfloat16
)
EXTREME_LABELS = np.eye(K, dtype=np.float32)[[0, 2, 1, 3]]


@functools.lru_cache(maxsize=None)
def _properties(case_id):
  _, name, hparams = CASES[CASE_IDS.index(case_id)]
  fn = _fn(name, hparams)
  loss = robust_losses.get(name, **hparams)

  def value_and_grad(x, y, **kwargs):
    (_, losses), grads = jax.value_and_grad(lambda x: (lambda l: (l.sum(), l))(fn(x, y, **kwargs)), has_aux=True)(x)
    return losses, grads

  views = _views(case_id)
  logits, labels = _data(views=views)
  # Padding may hold garbage: NaN logits in masked rows must not reach outputs or gradients.
  masked_logits = jnp.where(WHERE[..., None], logits, jnp.nan)
  extreme_logits = _with_views(EXTREME, views)
  masked, extreme = jax.jit(lambda x, e: (value_and_grad(x, labels, where=WHERE), value_and_grad(e, EXTREME_LABELS)))(
    masked_logits, extreme_logits
  )
  return jax.device_get(
    {
      "batched": _eager(case_id),
      "flat": fn(logits.reshape(*views, -1, K), labels.reshape(-1, K)).reshape(2, 3),
      "masked": masked,
      # A multi-view loss's views axis leads: select the kept examples of every view.
      "alone": fn(logits[(slice(None),) * len(views) + (WHERE,)], labels[WHERE]),
      "extreme": extreme,
      "extreme_as_f32": fn(extreme_logits.astype(jnp.float32), EXTREME_LABELS),
      "registry": loss(logits, labels, **_registry_kwargs(loss, logits, labels)),
      "registry_aux": loss.call_with_aux(logits, labels, **_registry_kwargs(loss, logits, labels)),
      "registry_where": loss(masked_logits, labels, where=WHERE, **_registry_kwargs(loss, masked_logits, labels)),
    }
  ), loss


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_leading_batch_dims(case_id):
  out, _ = _properties(case_id)
  # Leading dims are only a batch layout (for the clipping losses the statistic is over all of them).
  chex.assert_shape(out["batched"], (2, 3))
  np.testing.assert_allclose(out["batched"], out["flat"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_where_masks_examples_and_their_gradients(case_id):
  out, _ = _properties(case_id)
  losses, grads = out["masked"]
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grads))
  np.testing.assert_array_equal(losses[~WHERE], 0.0)
  np.testing.assert_array_equal(grads[..., ~WHERE, :], 0.0)
  # The kept examples get exactly the losses of a batch holding only them (for the clipping losses this
  # says masked examples do not enter the batch statistic).
  np.testing.assert_allclose(losses[WHERE], out["alone"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_finite_values_and_gradients_at_extreme_bfloat16_logits(case_id):
  out, _ = _properties(case_id)
  losses, grads = out["extreme"]
  chex.assert_type(losses, jnp.float32)
  chex.assert_type(grads, jnp.bfloat16)
  assert np.all(np.isfinite(losses)), losses
  assert np.all(np.isfinite(np.asarray(grads, np.float32))), grads
  # bf16 logits are upcast before any arithmetic: exactly the losses of their float32 values.
  np.testing.assert_allclose(losses, out["extreme_as_f32"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_registry_round_trip(case_id):
  out, loss = _properties(case_id)
  _, name, hparams = CASES[CASE_IDS.index(case_id)]
  assert loss.name == name
  for key, value in hparams.items():  # arrays are stored as nested tuples (hashable, by value)
    np.testing.assert_array_equal(np.asarray(loss.hparams[key]), np.asarray(value))
  np.testing.assert_array_equal(out["registry"], out["batched"])
  with_aux, aux = out["registry_aux"]
  np.testing.assert_array_equal(with_aux, out["batched"])
  np.testing.assert_allclose(out["registry_where"], out["masked"][0], rtol=1e-6, atol=1e-7)
  # The clipping losses report what they clipped; the batch entropy of ANL-CE-ER clips nothing.
  clips = loss.uses_batch_statistics and name != "active_negative_loss_entropy_regularized"
  assert set(aux) == (
    {"clipped", "unclipped"} if clips else {"example_state"} if name == "early_learning_regularization" else set()
  )
  aux.pop("example_state", None)
  for value in aux.values():
    chex.assert_shape(value, (2, 3))
    chex.assert_type(value, jnp.float32)
