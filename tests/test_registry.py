"""The loss registry: names, hyperparameter resolution and validation, the Loss object's interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl

K = 4
T = 0.7 * np.eye(K) + 0.1 * (1 - np.eye(K))
LOGITS = np.array(
  [[3.0, 0.5, -1.0, 0.2], [0.3, 0.1, -0.2, 0.4], [2.5, -1.5, 0.0, -0.5], [0.0, 1.0, 0.5, -2.0]], np.float32
)
Y = np.eye(K, dtype=np.float32)[[0, 2, 3, 1]]

EXPECTED_NAMES = [
  "active_negative_loss",
  "active_negative_loss_entropy_regularized",
  "active_passive_loss",
  "asymmetric_exponential_loss",
  "asymmetric_generalized_cross_entropy",
  "asymmetric_mean_squared_error",
  "asymmetric_norm_loss",
  "asymmetric_unhinged_loss",
  "backward_corrected_cross_entropy",
  "bi_tempered_logistic_loss",
  "binary_cross_entropy_dynamic_clipping",
  "bootstrapped_cross_entropy",
  "clipped_cross_entropy",
  "clipped_focal_loss",
  "early_learning_regularization",
  "epsilon_softmax_cross_entropy",
  "epsilon_softmax_cross_entropy_mae",
  "focal_loss",
  "forward_corrected_cross_entropy",
  "generalized_cross_entropy",
  "generalized_jensen_shannon_divergence",
  "jensen_shannon_divergence",
  "joint_asymmetric_loss",
  "ldr_kl_loss",
  "logit_clipping",
  "mean_absolute_error",
  "mean_squared_error",
  "nce_asymmetric_loss",
  "normalized_cross_entropy",
  "normalized_focal_loss",
  "normalized_generalized_cross_entropy",
  "normalized_negative_cross_entropy",
  "normalized_negative_focal_loss",
  "optimized_gradient_clipping",
  "oracle_small_loss_selection",
  "partially_huberised_cross_entropy",
  "partially_huberised_generalized_cross_entropy",
  "reverse_cross_entropy",
  "sigmoid_binary_cross_entropy",
  "softmax_cross_entropy",
  "sparse_regularization",
  "symmetric_cross_entropy",
  "tamed_cross_entropy",
  "taylor_cross_entropy",
  "truncated_generalized_cross_entropy",
]


def test_names_lists_every_public_loss_sorted():
  assert rl.names() == EXPECTED_NAMES
  for name in rl.names():
    assert getattr(rl, name).__name__ == name  # registered under its own name and exported


def test_hparams_are_resolved_defaults_plus_overrides():
  loss = rl.get("tamed_cross_entropy")
  assert loss.name == "tamed_cross_entropy"
  assert loss.hparams == {"alpha": 1.5, "label_smoothing": 0.0}
  assert rl.get("symmetric_cross_entropy", alpha=6.0, beta=0.1).hparams == {
    "alpha": 6.0,
    "beta": 0.1,
    "A": -4.0,
    "label_smoothing": 0.0,
  }
  assert rl.get("bi_tempered_logistic_loss", t1=0.8).hparams == {
    "t1": 0.8,
    "t2": 1.0,
    "num_iters": 5,
    "label_smoothing": 0.0,
  }
  assert rl.get("binary_cross_entropy_dynamic_clipping").hparams == {
    "statistic": "gmm",
    "quantile": 0.9,
    "num_std": 4.0,
    "per_element": False,
    "warmup_epochs": 5,  # the recommended configuration by name alone (the trainer passes the epoch)
    "per_class": False,
    "min_class_count": 8,
    "window_size": 0,  # read by the step-state init: 0 is the per-batch statistic, no window
    "label_smoothing": 0.0,
  }
  # CE and focal clipping have their own default separation (their ablation, docs/RESULTS.md), the same warm-up.
  for name in ("clipped_cross_entropy", "clipped_focal_loss"):
    hparams = rl.get(name).hparams
    assert (hparams["statistic"], hparams["num_std"], hparams["warmup_epochs"]) == ("gmm", 3.0, 5)
  # The oracle reference keeps no warm-up by default.
  assert rl.get("oracle_small_loss_selection", noise_rate=0.2).hparams["warmup_epochs"] == 0
  assert rl.get("truncated_generalized_cross_entropy").hparams == {
    "q": 0.7,
    "k": 0.5,
    "prune_start_epoch": 40,
    "prune_every_epochs": 10,
    "label_smoothing": 0.0,
  }


def test_capability_flags():
  weighted = {n for n in rl.names() if rl.get(n, **_required(n)).uses_example_weights}
  batch_stats = {n for n in rl.names() if rl.get(n, **_required(n)).uses_batch_statistics}
  assert weighted == {"truncated_generalized_cross_entropy"}
  assert batch_stats == {
    "active_negative_loss_entropy_regularized",
    "binary_cross_entropy_dynamic_clipping",
    "clipped_cross_entropy",
    "clipped_focal_loss",
    "oracle_small_loss_selection",
    "optimized_gradient_clipping",  # its step state (the queue) holds the global batch's losses
  }
  step_state = {n for n in rl.names() if rl.get(n, **_required(n)).uses_step_state}
  assert step_state == {"optimized_gradient_clipping"}  # windowed clipping only with window_size > 0
  assert {n for n in rl.names() if rl.get(n, **_required(n)).uses_learning_rate} == {"optimized_gradient_clipping"}
  stateful = {n: rl.get(n, **_required(n)).example_state_keys for n in rl.names()}
  assert {n: k for n, k in stateful.items() if k} == {
    "truncated_generalized_cross_entropy": ("weights",),
    "early_learning_regularization": ("targets",),
  }
  scheduled = {n for n in rl.names() if rl.get(n, **_required(n)).uses_epoch}
  assert scheduled == {
    "binary_cross_entropy_dynamic_clipping",
    "clipped_cross_entropy",
    "clipped_focal_loss",
    "oracle_small_loss_selection",
    "sparse_regularization",
  }
  views = {n: rl.get(n, **_required(n)).num_views for n in rl.names()}
  assert {n: v for n, v in views.items() if v != 1} == {"generalized_jensen_shannon_divergence": 2}
  assert rl.get("generalized_jensen_shannon_divergence", js_weights=(0.4, 0.2, 0.2, 0.2)).num_views == 3


def _required(name):
  return {k: (T if k == "transition_matrix" else 0.2) for k in rl.required_hparams(name)}


def test_hparam_types_cover_every_hyperparameter():
  types = rl.hparam_types()
  for name in rl.names():
    assert set(rl.get(name, **_required(name)).hparams) <= set(types)
  assert types["alpha"] is float and types["num_iters"] is int and types["statistic"] is str
  assert types["per_element"] is bool and types["transition_matrix"] is tuple
  # A transition matrix given as nested tuples (as a config holds it) works.
  as_tuple = tuple(map(tuple, T.tolist()))
  np.testing.assert_allclose(
    rl.get("forward_corrected_cross_entropy", transition_matrix=as_tuple)(LOGITS, Y),
    rl.forward_corrected_cross_entropy(LOGITS, Y, transition_matrix=T),
    rtol=1e-6,
  )


def test_unknown_name():
  with pytest.raises(
    ValueError,
    match=r"unknown loss 'cross_entropy'; did you mean .*'softmax_cross_entropy'.*\? Valid names are "
    r"\['active_negative_loss', 'active_negative_loss_entropy",
  ):
    rl.get("cross_entropy")


def test_unknown_and_missing_hyperparameters():
  with pytest.raises(
    ValueError,
    match=r"unknown hyperparameter\(s\) \['beta'\] for loss "
    r"'tamed_cross_entropy'; valid hyperparameters are \['alpha', 'label_smoothing'\]",
  ):
    rl.get("tamed_cross_entropy", beta=0.5)
  with pytest.raises(ValueError, match=r"needs hyperparameter\(s\) \['transition_matrix'\]"):
    rl.get("backward_corrected_cross_entropy")


BAD = [
  ("tamed_cross_entropy", {"alpha": -0.1}, r"alpha=-0.1 is out of range; valid range is \[0, inf\)"),
  ("generalized_cross_entropy", {"q": 1.5}, r"q=1.5 is out of range; valid range is \[0, 1\]"),
  ("generalized_cross_entropy", {"q": -0.2}, r"q=-0.2 is out of range"),
  ("normalized_generalized_cross_entropy", {"q": 2.0}, r"q=2.0 is out of range"),
  ("truncated_generalized_cross_entropy", {"k": 0.0}, r"k=0.0 is out of range; valid range is \(0, 1\)"),
  ("truncated_generalized_cross_entropy", {"k": 1.0}, r"k=1.0 is out of range; valid range is \(0, 1\)"),
  ("focal_loss", {"gamma": -1.0}, r"gamma=-1.0 is out of range; valid range is \[0, inf\)"),
  ("normalized_focal_loss", {"gamma": -1.0}, r"gamma=-1.0 is out of range"),
  ("bootstrapped_cross_entropy", {"beta": 1.2}, r"beta=1.2 is out of range; valid range is \[0, 1\]"),
  (
    "bootstrapped_cross_entropy",
    {"mode": "medium"},
    r"mode='medium' is not a valid choice; valid choices are \['hard', 'soft'\]",
  ),
  ("reverse_cross_entropy", {"A": 0.0}, r"A=0.0 is out of range; valid range is \(-inf, 0\)"),
  ("symmetric_cross_entropy", {"alpha": -1.0}, r"alpha=-1.0 is out of range"),
  (
    "active_passive_loss",
    {"active": "mae"},
    r"active='mae' is not a valid choice; valid choices are \['ce', 'fl', 'nce', 'nfl', 'ngce'\]",
  ),
  (
    "active_passive_loss",
    {"passive": "ce"},
    r"passive='ce' is not a valid choice; valid choices are \['mae', 'nmae', 'nrce', 'rce'\]",
  ),
  ("active_passive_loss", {"beta": -1.0}, r"beta=-1.0 is out of range"),
  (
    "forward_corrected_cross_entropy",
    {"transition_matrix": T + 0.01 * np.eye(K)},
    r"transition_matrix row 0 sums to 1.01.*must sum to 1 within 1e-05",
  ),
  (
    "forward_corrected_cross_entropy",
    {"transition_matrix": np.array([[1.2, -0.2], [0.0, 1.0]])},
    r"transition_matrix\[0, 1\]=-0.2 is out of range",
  ),
  (
    "forward_corrected_cross_entropy",
    {"transition_matrix": np.ones((2, 3)) / 3},
    r"must be a square K x K matrix; got shape \(2, 3\)",
  ),
  (
    "backward_corrected_cross_entropy",
    {"transition_matrix": np.full((K, K), 1 / K)},
    r"transition_matrix is singular or ill-conditioned",
  ),
  ("bi_tempered_logistic_loss", {"t1": 0.0}, r"t1=0.0 is out of range; valid range is \(0, 1\]"),
  ("bi_tempered_logistic_loss", {"t1": 1.5}, r"t1=1.5 is out of range"),
  ("bi_tempered_logistic_loss", {"t2": 0.8}, r"t2=0.8 is out of range; valid range is \[1, inf\)"),
  ("bi_tempered_logistic_loss", {"num_iters": 0}, r"num_iters=0 is out of range; valid range is"),
  (
    "clipped_cross_entropy",
    {"statistic": "max"},
    r"statistic='max' is not a valid choice; valid choices are "
    r"\['gmm', 'mad', 'mean', 'mean_std', 'median', 'otsu', 'quantile'\]",
  ),
  ("clipped_focal_loss", {"quantile": 0.0}, r"quantile=0.0 is out of range; valid range is \(0, 1\)"),
  ("binary_cross_entropy_dynamic_clipping", {"num_std": -0.5}, r"num_std=-0.5 is out of range"),
  (
    "softmax_cross_entropy",
    {"label_smoothing": 1.0},
    r"label_smoothing=1.0 is out of range; valid range is \(-inf, 1\)",
  ),
  ("generalized_cross_entropy", {"label_smoothing": float("nan")}, r"label_smoothing=nan is out of range"),
  ("normalized_negative_cross_entropy", {"min_prob": 0.0}, r"min_prob=0.0 is out of range; valid range is \(0, 1\)"),
  ("active_negative_loss", {"active": "ce"}, r"active='ce' is not a valid choice; valid choices are \['nce', 'nfl'\]"),
  ("asymmetric_unhinged_loss", {"a": 1.0}, r"a=1.0 is out of range; valid range is \(1, inf\)"),
  (
    "nce_asymmetric_loss",
    {"passive": "rce"},
    r"passive='rce' is not a valid choice; valid choices are \['ael', 'agce', 'anorm', 'aul'\]",
  ),
  ("asymmetric_mean_squared_error", {"a": 0.5}, r"a=0.5 is out of range; valid range is \[1, inf\)"),
  ("epsilon_softmax_cross_entropy", {"m": -1.0}, r"m=-1.0 is out of range; valid range is \[0, inf\)"),
  ("ldr_kl_loss", {"lam": 0.0}, r"lam=0.0 is out of range; valid range is \(0, inf\)"),
  ("jensen_shannon_divergence", {"pi": 1.0}, r"pi=1.0 is out of range; valid range is \(0, 1\)"),
  ("taylor_cross_entropy", {"order": 0}, r"order=0 is out of range; valid range is integers >= 1"),
  ("logit_clipping", {"tau": 0.0}, r"tau=0.0 is out of range; valid range is \(0, inf\)"),
  ("partially_huberised_cross_entropy", {"tau": 1.0}, r"tau=1.0 is out of range; valid range is \(1, inf\)"),
  ("partially_huberised_generalized_cross_entropy", {"q": 1.0}, r"q=1.0 is out of range; valid range is \(0, 1\)"),
  (
    "partially_huberised_generalized_cross_entropy",
    {"tau": 0.5},
    r"tau=0.5 is out of range; valid range is \(1, inf\)",
  ),
  ("asymmetric_norm_loss", {"a": 1.0}, r"a=1.0 is out of range; valid range is \(1, inf\)"),
  ("asymmetric_norm_loss", {"p": 0.0}, r"p=0.0 is out of range; valid range is \(0, inf\)"),
  ("nce_asymmetric_loss", {"passive": "anorm", "a": 0.5}, r"a=0.5 is out of range; valid range is \(1, inf\)"),
  ("active_negative_loss_entropy_regularized", {"lam": -1.0}, r"lam=-1.0 is out of range; valid range is \[0, inf\)"),
  (
    "active_negative_loss_entropy_regularized",
    {"min_prob": 0.5},
    r"min_prob=0.5 is out of range; valid range is \(0, 0.5\)",
  ),
  (
    "generalized_jensen_shannon_divergence",
    {"js_weights": (0.7, 0.3)},
    r"js_weights=\(0.7, 0.3\) has 2 weights; valid is at least 3 .*jensen_shannon_divergence\(pi=js_weights\[0\]\)",
  ),
  (
    "generalized_jensen_shannon_divergence",
    {"js_weights": (0.9, 0.05, 0.04)},
    r"js_weights=\(0.9, 0.05, 0.04\) sum to 0.99; valid weights sum to 1 within 0.001",
  ),
  (
    "generalized_jensen_shannon_divergence",
    {"js_weights": (1.0, 0.0, 0.0)},
    r"js_weights\[0\]=1.0 is out of range; valid range is \(0, 1\)",
  ),
  ("early_learning_regularization", {"beta": 1.0}, r"beta=1.0 is out of range; valid range is \[0, 1\)"),
  ("sparse_regularization", {"freq": 0}, r"freq=0 is out of range; valid range is integers >= 1"),
  ("sparse_regularization", {"rho": 0.9}, r"rho=0.9 is out of range; valid range is \[1, inf\)"),
  ("bi_tempered_logistic_loss", {"label_smoothing": 1.0}, r"label_smoothing=1.0 is out of range"),
]


@pytest.mark.parametrize("name,hparams,match", BAD, ids=[f"{n}-{next(iter(h))}-{i}" for i, (n, h, _) in enumerate(BAD)])
def test_out_of_range_hyperparameters_fail_at_construction(name, hparams, match):
  with pytest.raises(ValueError, match=match):
    rl.get(name, **hparams)


def test_hyperparameters_of_another_type_fail_at_construction():
  with pytest.raises(
    TypeError, match=r"hyperparameter num_iters=2.5 of loss 'bi_tempered_logistic_loss' must be an int"
  ):
    rl.get("bi_tempered_logistic_loss", num_iters=2.5)
  with pytest.raises(ValueError, match=r"num_iters=2.5 must be a Python int"):  # the function's own check
    rl.bi_tempered_logistic_loss(LOGITS, Y, num_iters=2.5)


def test_weights_only_for_the_truncated_loss():
  w = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
  with pytest.raises(ValueError, match=r"generalized_cross_entropy does not take per-example weights"):
    rl.get("generalized_cross_entropy")(LOGITS, Y, weights=w)
  loss = rl.get("truncated_generalized_cross_entropy")
  losses, aux = loss.call_with_aux(LOGITS, Y, weights=w)
  assert aux == {}
  gce = rl.generalized_cross_entropy(LOGITS, Y)
  lq_k = (1 - 0.5**0.7) / 0.7
  np.testing.assert_allclose(losses, np.where(w > 0, gce, lq_k), rtol=1e-6)


def test_loss_object_works_under_jit_and_grad():
  loss = rl.get("clipped_focal_loss", statistic="median", warmup_epochs=0)
  value = jax.jit(lambda x: loss(x, Y).mean())(LOGITS)
  grad = jax.jit(jax.grad(lambda x: loss(x, Y).mean()))(LOGITS)
  np.testing.assert_allclose(value, loss(LOGITS, Y).mean(), rtol=1e-6)
  assert grad.shape == LOGITS.shape and np.all(np.isfinite(grad))
  assert repr(rl.get("tamed_cross_entropy", alpha=2.0)) == (
    "Loss('tamed_cross_entropy', alpha=2.0, label_smoothing=0.0)"
  )


def test_axis_name_is_ignored_by_per_example_losses():
  # Per-example losses need no communication; passing the data-parallel axis name is harmless.
  loss = rl.get("softmax_cross_entropy")
  np.testing.assert_array_equal(loss(LOGITS, Y, axis_name="batch"), loss(LOGITS, Y))
  assert loss.call_with_aux(LOGITS, Y, axis_name="batch")[1] == {}
  assert jnp.asarray(loss(LOGITS, Y)).dtype == jnp.float32


def test_loss_objects_are_frozen_and_equal_by_value():
  a, b = rl.get("tamed_cross_entropy", alpha=2.0), rl.get("tamed_cross_entropy", alpha=2.0)
  assert a == b and hash(a) == hash(b) and a is not b
  assert a != rl.get("tamed_cross_entropy", alpha=1.5) and a != rl.get("generalized_cross_entropy")
  assert len({a, b, rl.get("tamed_cross_entropy", alpha=1.5)}) == 2
  # Arrays compare by content, whatever their container type.
  t1 = rl.get("forward_corrected_cross_entropy", transition_matrix=T)
  t2 = rl.get("forward_corrected_cross_entropy", transition_matrix=T.tolist())
  assert t1 == t2 and hash(t1) == hash(t2)
  t3 = rl.get("forward_corrected_cross_entropy", transition_matrix=np.asarray(T, np.float32))
  t4 = rl.get("forward_corrected_cross_entropy", transition_matrix=jnp.asarray(T, jnp.float32))
  assert t3 == t4 and hash(t3) == hash(t4)
  assert t1 != rl.get("forward_corrected_cross_entropy", transition_matrix=np.eye(K))
  with pytest.raises(AttributeError, match="frozen"):
    a.name = "other"
  with pytest.raises(TypeError):
    a.hparams["alpha"] = 0.0  # read-only: what a Loss computes cannot drift from what it reports


def test_loss_object_is_a_static_jit_argument_compiled_once_per_value():
  traces = []

  @jax.jit
  def mean_loss(logits, labels, loss):
    traces.append(loss)
    return loss(logits, labels).mean()

  mean_loss = jax.jit(mean_loss.__wrapped__, static_argnums=2)
  for _ in range(3):
    mean_loss(LOGITS, Y, rl.get("generalized_cross_entropy", q=0.5))
  assert len(traces) == 1
  mean_loss(LOGITS, Y, rl.get("generalized_cross_entropy", q=0.6))
  assert len(traces) == 2


def test_schedules_that_never_act_are_rejected():
  with pytest.raises(
    ValueError,
    match=r"prune_start_epoch=40 is out of range for num_epochs=30; valid range "
    r"is \[0, 29\]",
  ):
    rl.get("truncated_generalized_cross_entropy").check_training(30)
  rl.get("truncated_generalized_cross_entropy", prune_start_epoch=29).check_training(30)
  with pytest.raises(ValueError, match=r"warmup_epochs=5 is out of range for num_epochs=5"):
    rl.get("clipped_cross_entropy", warmup_epochs=5).check_training(5)
  # The default warm-up (5 epochs): the message says how to fix a shorter run.
  for name in ("clipped_cross_entropy", "binary_cross_entropy_dynamic_clipping", "clipped_focal_loss"):
    with pytest.raises(
      ValueError,
      match=r"warmup_epochs=5 is out of range for num_epochs=3; valid range is \[0, 2\] \(otherwise the loss is "
      r"never clipped\)\. The clipping losses' default warm-up is 5 epochs; set warmup_epochs=0 \(trainer: "
      r"--config\.loss\.warmup_epochs=0\) to clip from the first step, a warm-up below 3, or num_epochs above 5",
    ):
      rl.get(name).check_training(3)
    rl.get(name).check_training(6)
    rl.get(name, warmup_epochs=0).check_training(1)
  with pytest.raises(ValueError, match=r"prune_every_epochs=0 is out of range"):
    rl.get("truncated_generalized_cross_entropy", prune_every_epochs=0)


def test_truncated_lq_refresh_uses_the_labels_the_loss_trains_on():
  # With label smoothing the loss sees smoothed labels; its pruning weights must be computed with them too.
  # Row 3 has p_y = 0.494 > k with its hard label but 0.5 * 0.494 + 0.125 = 0.372 < k with the smoothed one.
  loss = rl.get("truncated_generalized_cross_entropy", k=0.45, label_smoothing=0.5)
  ids = np.array([0, 2, 3, 1])
  smoothed = 0.5 * np.eye(K)[ids] + 0.5 / K
  expected = rl.truncated_lq_prune_weights(LOGITS, smoothed, k=0.45)
  np.testing.assert_array_equal(loss.refresh(LOGITS, ids)["weights"], expected)
  np.testing.assert_array_equal(expected, [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(rl.truncated_lq_prune_weights(LOGITS, ids, k=0.45), [1.0, 0.0, 0.0, 1.0])
  assert loss.refresh_due(40) and loss.refresh_due(50) and not loss.refresh_due(45) and not loss.refresh_due(39)


@pytest.mark.parametrize("name", rl.names())
def test_hparam_defaults_are_what_get_binds(name):
  defaults = rl.hparam_defaults(name)
  required = rl.required_hparams(name)
  assert not set(required) & set(defaults)
  if not required:
    assert rl.get(name).hparams == defaults
  with pytest.raises(ValueError, match="did you mean"):
    rl.hparam_defaults(name + "x")
