"""Forward-mode derivatives (jax.jvp, jax.jacfwd, jax.hessian) of every registered loss, with class ids and with
one-hot labels, against the same quantity computed from a reference: for class ids the one-hot path (plain
autodiff of the per-class formula for every loss but bi-tempered), for one-hot labels reverse mode
(jax.jacrev, and reverse-over-reverse for the Hessian); the written-out derivatives of the class-id fast paths
and bi-tempered's analytic gradient against formulas written with jax.nn.log_softmax.

Everything runs in float64 (the library keeps float64 inputs in float64), so a wrong derivative cannot hide in
float32 rounding. Tolerance: the compared quantities are the same mathematical expressions evaluated in a
different order (reductions over K <= 5 classes, a few dozen float64 operations of O(1) values, each rounding
by at most 2**-53 = 1.1e-16 relative); the largest amplification is the normalized losses' division by
sum_k log p_k and the clipping statistics' log/exp, well below 1e3 for these logits (|z| <= ~8). So agreement
to 1e-9 relative to the largest entry of the reference leaves a margin of ~1e4 over rounding and still
catches any wrong term (a wrong derivative is off by O(1) of the entry).

Bugs these tests were checked to catch (each planted as a one-line change, seen to fail here, reverted):
* classification.focal_class_terms with detach_modulator=True returning ``t = -modulator * log_p`` with the
  undetached modulator (u detached): the gradient is unchanged, only second derivatives of the class-id path
  of NFL/APL/ANL/JAL with detached modulators change -> test_forward_mode_matches_reference[...ids] fails.
* _utils.label_log_prob_and_sum's tangent ``d_sum = ... + sum_u * p_dz`` (sign) -> fails for NCE and every
  loss built on it, in jvp, jacfwd and hessian.
* bitempered._bi_tempered_jvp's ``escorts = softmax(t1 * log_probs)`` (t1 for t2) -> fails
  test_bi_tempered_derivatives_match_the_formula.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl
from tests.views import single_view

K = 4
# Asymmetric transition matrix (a row read as a column gives other numbers).
T = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.0, 0.1, 0.8, 0.1], [0.2, 0.0, 0.1, 0.7]])
RTOL = 1e-9


def _loss_and_kwargs(name):
  required = {k: (T if k == "transition_matrix" else 0.2) for k in rl.required_hparams(name)}
  loss = single_view(rl.get(name, **required))
  kwargs = {}
  if loss.uses_epoch:
    kwargs["epoch"] = 7  # past any warm-up: the clipping losses clip, SR's weight has grown
  state = loss.init_example_state(3, K)
  if "targets" in state:  # ELR: a non-trivial memory, so the regulariser's derivative matters
    state["targets"] = np.full((3, K), 1.0 / K) + np.arange(K) * 0.01
  if "weights" in state:  # truncated Lq: one example pruned
    state["weights"] = np.array([1.0, 0.0, 1.0])
  if state:
    kwargs["example_state"] = {k: jnp.asarray(v, jnp.float64) for k, v in state.items()}
  return loss, kwargs


def _data():
  logits = 2.5 * jax.random.normal(jax.random.key(3), (3, K), jnp.float64)
  ids = jnp.array([2, 0, 3])
  tangent = jax.random.normal(jax.random.key(4), (3, K), jnp.float64)
  return logits, ids, tangent


def _close(actual, expected):
  expected = np.asarray(expected)
  scale = max(float(np.max(np.abs(expected))), 1e-300)
  np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


@functools.lru_cache(maxsize=None)
def _derivatives(name, form):
  """(forward-mode results, reference results) for one loss and label form, in float64."""
  with jax.enable_x64(True):
    loss, kwargs = _loss_and_kwargs(name)
    logits, ids, v = _data()
    onehot = jax.nn.one_hot(ids, K, dtype=jnp.float64)
    per_example = lambda labels: lambda z: loss(z, labels, **kwargs)
    total = lambda labels: lambda z: loss(z, labels, **kwargs).sum()

    @jax.jit
    def run(z, v):
      f, ft = (per_example(ids), total(ids)) if form == "ids" else (per_example(onehot), total(onehot))
      forward = (jax.jvp(f, (z,), (v,))[1], jax.jacfwd(f)(z), jax.hessian(ft)(z))
      if form == "ids":  # the one-hot path, differentiated the same way
        r, rt = per_example(onehot), total(onehot)
        reference = (jax.jvp(r, (z,), (v,))[1], jax.jacfwd(r)(z), jax.hessian(rt)(z))
      else:  # reverse mode of the same function
        jac = jax.jacrev(f)(z)
        reference = (jnp.einsum("bij,ij->b", jac, v), jac, jax.jacrev(jax.jacrev(ft))(z))
      return forward, reference

    return jax.device_get(run(logits, v))


@pytest.mark.parametrize("form", ["ids", "onehot"])
@pytest.mark.parametrize("name", rl.names())
def test_forward_mode_matches_reference(name, form):
  (jvp, jac, hess), (ref_jvp, ref_jac, ref_hess) = _derivatives(name, form)
  assert jac.shape == (3, 3, K) and hess.shape == (3, K, 3, K)
  assert np.isfinite(hess).all()
  _close(jvp, ref_jvp)
  _close(jac, ref_jac)
  _close(hess, ref_hess)


# --- the written-out derivatives against formulas written with jax.nn.log_softmax ------------------------


def _nce(z, y):
  lp = jax.nn.log_softmax(z)
  return (y * lp).sum(-1) / lp.sum(-1)


def _nfl(gamma, detach):
  def f(z, y):
    p, lp = jax.nn.softmax(z), jax.nn.log_softmax(z)
    modulator = (1 - p) ** gamma
    t = -(jax.lax.stop_gradient(modulator) if detach else modulator) * lp
    return (y * t).sum(-1) / t.sum(-1)

  return f


def _ngce(q):
  def f(z, y):
    t = 1 - jax.nn.softmax(z) ** q
    return (y * t).sum(-1) / t.sum(-1)

  return f


FORMULAS = [
  ("normalized_cross_entropy", {}, _nce),
  ("normalized_focal_loss", {}, _nfl(0.5, False)),
  ("normalized_focal_loss", {"gamma": 2.0, "detach_modulator": True}, _nfl(2.0, True)),
  ("normalized_generalized_cross_entropy", {}, _ngce(0.7)),
  ("normalized_generalized_cross_entropy", {"q": 0.1}, _ngce(0.1)),
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


@pytest.mark.parametrize(
  "name,hparams,formula", FORMULAS, ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in h.items())}" for n, h, _ in FORMULAS]
)
def test_class_id_fast_paths_have_the_derivatives_of_the_formula(name, hparams, formula):
  with jax.enable_x64(True):
    logits, ids, v = _data()
    onehot = jax.nn.one_hot(ids, K, dtype=jnp.float64)
    fn = functools.partial(getattr(rl, name), **hparams)

    @jax.jit
    def run(z, v):
      out = []
      for f in (lambda z: fn(z, ids), lambda z: formula(z, onehot)):
        out.append((jax.jvp(f, (z,), (v,))[1], jax.jacfwd(f)(z), jax.hessian(lambda z: f(z).sum())(z)))
      return out

    (jvp, jac, hess), (ref_jvp, ref_jac, ref_hess) = jax.device_get(run(logits, v))
  _close(jvp, ref_jvp)
  _close(jac, ref_jac)
  _close(hess, ref_hess)


def _bi_tempered_formula(z, y, t1, t2, num_iters):
  """The bi-tempered loss written out: tempered softmax by the same fixed point, plain autodiff through it."""
  mu = jnp.max(z, -1, keepdims=True)
  a0 = z - mu
  exp_t = lambda a: jnp.power(1.0 + (1.0 - t2) * a, 1.0 / (1.0 - t2))
  a = a0
  for _ in range(num_iters):
    a = a0 * jnp.power(jnp.sum(exp_t(a), -1, keepdims=True), 1.0 - t2)
  partition = jnp.sum(exp_t(a), -1, keepdims=True)
  shift = -(jnp.power(partition, t2 - 1.0) - 1.0) / (1.0 - t2)
  p = exp_t(a0 - shift)
  log_t = lambda x: (jnp.power(x, 1.0 - t1) - 1.0) / (1.0 - t1)
  y_safe = jnp.where(y > 0, y, 1.0)
  return jnp.sum(
    jnp.where(y > 0, y * log_t(y_safe), 0.0)
    - y * log_t(p)
    - (jnp.where(y > 0, jnp.power(y_safe, 2.0 - t1), 0.0) - jnp.power(p, 2.0 - t1)) / (2.0 - t1),
    -1,
  )


@pytest.mark.parametrize("form", ["ids", "onehot"])
def test_bi_tempered_derivatives_match_the_formula(form):
  # The library uses the reference's analytic gradient at the exact normaliser; autodiff through the fixed
  # point equals it once the iteration has converged (a contraction: its derivative converges too). 60
  # iterations of t2 = 1.2 reach float64 precision for these logits (the contraction factor is below 0.6).
  t1, t2, iters = 0.8, 1.2, 60
  with jax.enable_x64(True):
    logits, ids, v = _data()
    onehot = jax.nn.one_hot(ids, K, dtype=jnp.float64)
    labels = ids if form == "ids" else onehot
    loss = lambda z: rl.bi_tempered_logistic_loss(z, labels, t1=t1, t2=t2, num_iters=iters)
    formula = lambda z: _bi_tempered_formula(z, onehot, t1, t2, iters)

    @jax.jit
    def run(z, v):
      return [
        (jax.jvp(f, (z,), (v,))[1], jax.jacfwd(f)(z), jax.hessian(lambda z: f(z).sum())(z)) for f in (loss, formula)
      ]

    (jvp, jac, hess), (ref_jvp, ref_jac, ref_hess) = jax.device_get(run(logits, v))
  _close(jvp, ref_jvp)
  _close(jac, ref_jac)
  _close(hess, ref_hess)


def test_forward_mode_in_float32_under_jit():
  # The everyday setting: float32 logits, class ids, jvp of the mean loss; the registry's clipped loss with its
  # statistic over the batch and NCE+RCE (the fused pass). Against reverse mode, in float32: the two modes
  # evaluate the same linear map in another order, so they agree to a few float32 ulps of the gradient's scale.
  logits = 3.0 * jax.random.normal(jax.random.key(5), (64, 10))
  ids = jax.random.randint(jax.random.key(6), (64,), 0, 10)
  v = jax.random.normal(jax.random.key(7), (64, 10))
  for loss in (rl.get("clipped_cross_entropy"), rl.get("active_passive_loss"), rl.get("sigmoid_binary_cross_entropy")):
    epoch = {"epoch": 5} if loss.uses_epoch else {}  # the clipped loss past its default warm-up: it clips
    f = lambda z: loss(z, ids, **epoch).mean()
    forward = jax.jit(lambda z, v: jax.jvp(f, (z,), (v,))[1])(logits, v)
    reverse = jnp.vdot(jax.jit(jax.grad(f))(logits), v)
    np.testing.assert_allclose(forward, reverse, rtol=1e-5, atol=1e-6)
