"""Defined behaviour on bad input, for every registered loss where it applies: negative class ids (ignored
examples), class ids >= K, empty batches, batch statistics under vmap, schedules and state a call leaves out,
and errors that name the argument and what is valid.

Bugs these tests were checked to catch (each planted as a one-line change, seen to fail here, reverted):
* clipping.clipped_cross_entropy computing its statistic with the caller's `where` instead of the one
  `_utils.prepare` returns (negative ids then enter the batch statistic as zero losses) ->
  test_negative_class_ids_are_ignored_examples[clipped_cross_entropy] fails (kept examples differ from the
  batch without the ignored ones).
* _utils.class_id_mask's traced branch returning ``labels > 0`` as the valid mask (class 0 ignored) -> the
  same test fails for every loss under jit.
* _utils.prepare's NaN fill for ids >= K replaced by 0 -> test_class_ids_out_of_range_... [jit] fails.
* clipping.batch_threshold without its empty-batch guard -> test_empty_batch fails for the four clipping
  losses ("zero-size array to reduction operation").
* clipping._gathered always gathering with to="invarying" -> test_batch_statistics_under_vmap fails for the
  gathered statistics ("pvary should be called under jax.shard_map").
* clipping.clipped_cross_entropy without its _check_warmup_epoch call -> test_a_schedule_needs_the_epoch fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl
from tests.views import single_view

K = 4
T = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.0, 0.1, 0.8, 0.1], [0.2, 0.0, 0.1, 0.7]])
B = 8
LOGITS = np.asarray(3.0 * jax.random.normal(jax.random.key(0), (B, K)), np.float32)
IDS = np.array([2, -1, 0, 3, -7, 1, 1, 0], np.int32)
VALID = IDS >= 0
IDS_OK = np.where(VALID, IDS, 0)


def _loss(name, **hparams):
  required = {k: (T if k == "transition_matrix" else 0.2) for k in rl.required_hparams(name)}
  return single_view(rl.get(name, **required, **hparams))


def _kwargs(loss, n):
  """The call arguments a training loop passes: the epoch (past any warm-up) and the loss's state rows."""
  kwargs = {"epoch": 7} if loss.uses_epoch else {}
  state = loss.init_example_state(n, K)
  if "weights" in state:
    state["weights"] = (np.arange(n) % 3 != 1).astype(np.float32)
  if "targets" in state:
    state["targets"] = np.full((n, K), 0.2, np.float32)
  if state:
    kwargs["example_state"] = state
  return kwargs


def _value_and_grad(loss, logits, labels, **kwargs):
  def total(z):
    losses, aux = loss.call_with_aux(z, labels, **kwargs)
    return losses.sum(), (losses, aux)

  (_, (losses, aux)), grads = jax.value_and_grad(total, has_aux=True)(logits)
  return losses, grads, aux


@pytest.mark.parametrize("name", rl.names())
def test_negative_class_ids_are_ignored_examples(name):
  loss = _loss(name)
  kwargs = _kwargs(loss, B)
  # Ignored examples may hold garbage logits, exactly as masked ones may.
  logits = np.where(VALID[:, None], LOGITS, np.nan).astype(np.float32)
  as_where = np.where(VALID, IDS, 0)
  # Eagerly (concrete ids) and under jit (traced ids: the mask is computed in the program).
  for run in (lambda f, *args: f(*args), lambda f, *args: jax.jit(f)(*args)):
    losses, grads, aux = run(lambda z, y: _value_and_grad(loss, z, y, **kwargs), logits, IDS)
    masked, masked_grads, masked_aux = run(
      lambda z, y, w: _value_and_grad(loss, z, y, where=w, **kwargs), logits, as_where, VALID
    )
    assert np.isfinite(losses).all() and np.isfinite(grads).all()
    np.testing.assert_array_equal(losses[~VALID], 0.0)
    np.testing.assert_array_equal(grads[~VALID], 0.0)
    # Exactly what where=False gives, aux (clipping flags, updated state rows) included.
    np.testing.assert_array_equal(losses, masked)
    np.testing.assert_array_equal(grads, masked_grads)
    jax.tree.map(np.testing.assert_array_equal, aux, masked_aux)
  if "example_state" in aux:  # state rows of ignored examples come back unchanged
    for key, rows in aux["example_state"].items():
      np.testing.assert_array_equal(np.asarray(rows)[~VALID], kwargs["example_state"][key][~VALID])
  # Left out of every batch statistic: the kept examples get the losses of a batch holding only them.
  alone_kwargs = _kwargs(loss, int(VALID.sum()))
  if "example_state" in kwargs:
    alone_kwargs["example_state"] = {k: v[VALID] for k, v in kwargs["example_state"].items()}
  alone = loss(LOGITS[VALID], IDS[VALID], **alone_kwargs)
  np.testing.assert_allclose(losses[VALID], alone, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "clipped_cross_entropy", "generalized_cross_entropy"])
def test_negative_class_ids_with_label_smoothing(name):
  # The registry's label smoothing turns ids into soft labels; the ignored examples stay ignored.
  clipping = {"statistic": "quantile", "warmup_epochs": 0}  # clips from the first step: no epoch needed
  loss = rl.get(name, label_smoothing=0.1, **(clipping if "clipped" in name else {}))
  losses = loss(LOGITS, IDS)
  np.testing.assert_array_equal(np.asarray(losses)[~VALID], 0.0)
  smoothed = 0.9 * np.eye(K, dtype=np.float32)[IDS[VALID]] + 0.1 / K
  unsmoothed = rl.get(name, **{**loss.hparams, "label_smoothing": 0.0})
  np.testing.assert_allclose(np.asarray(losses)[VALID], unsmoothed(LOGITS[VALID], smoothed), rtol=1e-6)
  # Under jit an id >= K gives NaN for that example with label smoothing too.
  ids = np.array([2, 1, 0, K, 3, 1, 0, 2], np.int32)
  assert np.isnan(jax.jit(loss)(LOGITS, ids)[3])


@pytest.mark.parametrize("name", rl.names())
def test_class_ids_out_of_range_are_an_error_eagerly_and_nan_under_jit(name):
  loss = _loss(name)
  kwargs = _kwargs(loss, B)
  ids = np.array([2, 1, 0, K, 3, 1, 0, 2], np.int32)
  with pytest.raises(
    ValueError, match=rf"labels\[3\]={K} is out of range for logits with K={K} classes; valid class ids"
  ):
    loss(LOGITS, ids, **kwargs)
  losses, grads, _ = jax.jit(lambda z, y: _value_and_grad(loss, z, y, **kwargs))(LOGITS, ids)
  assert np.isnan(losses[3])
  if not loss.uses_batch_statistics:  # the other examples are untouched
    others = np.arange(B) != 3
    assert np.isfinite(losses[others]).all() and np.isfinite(grads[others]).all()


@pytest.mark.parametrize("name", rl.names())
def test_empty_batch_gives_an_empty_result(name):
  loss = _loss(name)
  for shape in ((0,), (2, 0)):
    logits = np.zeros((*shape, K), np.float32)
    kwargs = {"epoch": 7} if loss.uses_epoch else {}
    state = loss.init_example_state(0, K)
    if state:
      kwargs["example_state"] = {k: v.reshape(*shape, *v.shape[1:]) for k, v in state.items()}
    for labels in (np.zeros(shape, np.int32), np.zeros((*shape, K), np.float32)):
      eager = loss(logits, labels, **kwargs)
      jitted, grads = jax.jit(lambda z, y: (loss(z, y, **kwargs), jax.grad(lambda z: loss(z, y, **kwargs).sum())(z)))(
        logits, labels
      )
      assert eager.shape == jitted.shape == shape and eager.dtype == jnp.float32
      assert grads.shape == logits.shape


BATCH_STATISTIC_CASES = [
  ("clipped_cross_entropy", {"statistic": "quantile", "quantile": 0.7}),
  ("clipped_cross_entropy", {"statistic": "mean_std", "num_std": 0.5}),
  ("clipped_focal_loss", {"statistic": "gmm", "num_std": 1.0}),
  ("binary_cross_entropy_dynamic_clipping", {"statistic": "median", "per_element": True}),
  ("oracle_small_loss_selection", {"noise_rate": 0.3}),
]


@pytest.mark.parametrize(
  "name,hparams", BATCH_STATISTIC_CASES, ids=[f"{n}-{h.get('statistic', '')}" for n, h in BATCH_STATISTIC_CASES]
)
def test_batch_statistics_under_vmap_are_global(name, hparams):
  # vmap over 4 groups of 2 with axis_name: the statistic is over all 8 examples, as one batch of 8 gives.
  loss = rl.get(name, **hparams)
  epoch = {"epoch": 7} if loss.uses_epoch else {}  # past the clipping losses' default warm-up
  ids = np.where(VALID, IDS, 1)
  expected, expected_grads, expected_aux = _value_and_grad(loss, LOGITS, ids, **epoch)
  per_group = jax.vmap(lambda z, y: _value_and_grad(loss, z, y, axis_name="g", **epoch), axis_name="g")
  for fn in (per_group, jax.jit(per_group)):
    losses, grads, aux = fn(LOGITS.reshape(4, 2, K), ids.reshape(4, 2))
    np.testing.assert_allclose(losses.reshape(-1), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads.reshape(B, K), expected_grads, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(aux["clipped"].reshape(-1), expected_aux["clipped"])


def test_a_schedule_needs_the_epoch():
  message = r"warmup_epochs=5 needs the epoch: pass epoch="
  for name in ("clipped_cross_entropy", "clipped_focal_loss", "binary_cross_entropy_dynamic_clipping"):
    loss = rl.get(name, warmup_epochs=5)
    with pytest.raises(ValueError, match=message):
      loss(LOGITS, IDS_OK)
    with pytest.raises(ValueError, match=message):  # at trace time, before anything is compiled
      jax.jit(lambda z: loss(z, IDS_OK))(LOGITS)
    with pytest.raises(ValueError, match=message):
      getattr(rl, name)(LOGITS, IDS_OK, warmup_epochs=5)
    # Warming up: unclipped; after it: clipped; no warm-up: no epoch needed.
    unclipped = rl.get(name, statistic="quantile", quantile=0.5, warmup_epochs=5)
    np.testing.assert_array_equal(
      unclipped(LOGITS, IDS_OK, epoch=4), unclipped.call_with_aux(LOGITS, IDS_OK, epoch=4)[1]["unclipped"]
    )
    assert unclipped.call_with_aux(LOGITS, IDS_OK, epoch=5)[1]["clipped"].sum() > 0
    rl.get(name, warmup_epochs=0)(LOGITS, IDS_OK)
    # The default is a warm-up of 5 epochs: by name alone the loss needs the epoch too, and says both ways out.
    with pytest.raises(ValueError, match=message + r".*or warmup_epochs=0 to clip from the first step"):
      rl.get(name)(LOGITS, IDS_OK)
  with pytest.raises(ValueError, match=r"warmup_epochs=2 needs the epoch"):
    rl.get("oracle_small_loss_selection", noise_rate=0.2, warmup_epochs=2)(LOGITS, IDS_OK)
  # SR's weight grows by rho per epoch from the start.
  with pytest.raises(
    ValueError, match=r"sparse_regularization: the regulariser weight grows with the epoch .*rho=1.03"
  ):
    rl.sparse_regularization(LOGITS, IDS_OK)
  with pytest.raises(ValueError, match=r"sparse_regularization: the regulariser weight grows"):
    rl.get("sparse_regularization")(LOGITS, IDS_OK)
  np.testing.assert_array_equal(
    rl.sparse_regularization(LOGITS, IDS_OK, rho=1.0), rl.sparse_regularization(LOGITS, IDS_OK, epoch=0)
  )


def test_a_stateful_loss_needs_its_state():
  ids = IDS_OK
  with pytest.raises(ValueError, match=r"early_learning_regularization needs its per-example state: pass targets="):
    rl.early_learning_regularization(LOGITS, ids)
  with pytest.raises(
    ValueError, match=r"early_learning_regularization keeps per-example state \['targets'\] and was called without"
  ):
    rl.get("early_learning_regularization")(LOGITS, ids)
  with pytest.raises(ValueError, match=r"keeps per-example state \['weights'\] and was called without \['weights'\]"):
    rl.get("truncated_generalized_cross_entropy").call_with_aux(LOGITS, ids)
  with pytest.raises(ValueError, match=r"targets must have the shape of logits \(8, 4\); got \(8,\)"):
    rl.early_learning_regularization(LOGITS, ids, targets=np.zeros(B))
  loss = rl.get("truncated_generalized_cross_entropy")
  w = np.ones(B, np.float32)
  np.testing.assert_array_equal(loss(LOGITS, ids, weights=w), loss(LOGITS, ids, example_state={"weights": w}))


def test_where_must_be_per_example():
  with pytest.raises(
    ValueError,
    match=r"where must be a per-example mask broadcastable to logits.shape\[:-1\] = \(8,\), not optax's per-class "
    r"mask; got shape \(8, 4\) \(it has the shape of logits",
  ):
    rl.softmax_cross_entropy(LOGITS, IDS_OK, where=np.ones((B, K), bool))
  with pytest.raises(ValueError, match=r"broadcastable to logits.shape\[:-1\] = \(8,\).*got shape \(3,\)"):
    rl.get("clipped_cross_entropy")(LOGITS, IDS_OK, where=np.ones(3, bool), epoch=7)
  # Broadcastable masks are fine.
  np.testing.assert_array_equal(
    rl.softmax_cross_entropy(LOGITS, IDS_OK, where=True), rl.softmax_cross_entropy(LOGITS, IDS_OK)
  )


def test_hyperparameters_of_the_wrong_type_name_the_argument_and_type():
  with pytest.raises(TypeError, match=r"hyperparameter alpha='2' of loss 'tamed_cross_entropy' must be a float"):
    rl.get("tamed_cross_entropy", alpha="2")
  with pytest.raises(TypeError, match=r"alpha='2' must be a real number \(float\); got str"):
    rl.tamed_cross_entropy(LOGITS, IDS_OK, alpha="2")
  with pytest.raises(TypeError, match=r"hyperparameter order=2.0 of loss 'taylor_cross_entropy' must be an int"):
    rl.get("taylor_cross_entropy", order=2.0)
  with pytest.raises(TypeError, match=r"hyperparameter detach_modulator=1 of loss 'focal_loss' must be a bool"):
    rl.get("focal_loss", detach_modulator=1)
  with pytest.raises(TypeError, match=r"detach_modulator='yes' must be a bool"):
    rl.focal_loss(LOGITS, IDS_OK, detach_modulator="yes")
  with pytest.raises(TypeError, match=r"gamma=True must be a real number"):
    rl.focal_loss(LOGITS, IDS_OK, gamma=True)
  with pytest.raises(ValueError, match=r"statistic=3 is not a valid choice"):
    rl.dynamic_clipping(LOGITS[:, 0], statistic=3)
  # An int where a float is expected is a float.
  loss = rl.get("tamed_cross_entropy", alpha=2)
  assert loss.hparams["alpha"] == 2.0 and isinstance(loss.hparams["alpha"], float)
  assert loss == rl.get("tamed_cross_entropy", alpha=2.0)


def test_unknown_names_suggest_the_closest():
  with pytest.raises(ValueError, match=r"unknown loss 'softmax_crossentropy'; did you mean 'softmax_cross_entropy'"):
    rl.get("softmax_crossentropy")
  with pytest.raises(ValueError, match=r"unknown loss 'generalised_cross_entropy'; did you mean 'generalized_cross"):
    rl.required_hparams("generalised_cross_entropy")
  with pytest.raises(ValueError, match=r"unknown loss 'xyz'; valid names are \['active_negative_loss'"):
    rl.get("xyz")
  with pytest.raises(
    ValueError, match=r"unknown hyperparameter\(s\) \['gama'\] for loss 'focal_loss'; 'gama': did you mean 'gamma'\?"
  ):
    rl.get("focal_loss", gama=2.0)
