"""Class-id paths against independent NumPy (float64) formulas written with the class id, for every loss whose
class-id path is written out separately from its one-hot path (and a few that expand ids, for coverage).

tests/test_losses_values.py checks the one-hot paths against NumPy and tests/test_integer_labels.py checks
that ids and one-hot labels agree; this file pins the class-id paths to the formula directly, so a bug in a
class-id path cannot hide behind a matching bug or a symmetric input. Bugs these tests were checked to catch
(each planted as a one-line change, seen to fail here, reverted):
* symmetric.symmetric_cross_entropy's class-id path with ``- beta * A * jnp.expm1(log_p_y)`` (the sign of the
  RCE term) -> test_class_id_path_value[symmetric_cross_entropy-...].
* correction.forward_corrected_cross_entropy's class-id path reading row y of T (``t[labels]``) instead of
  column y (``t.T[labels]``) -> test_class_id_path_value[forward_corrected_cross_entropy] (T is asymmetric).
* correction.backward_corrected_cross_entropy's class-id path with ``t_inv.T[labels]`` (column of T^-1) ->
  test_class_id_path_value[backward_corrected_cross_entropy].
* epsilon_softmax._eps_ce's class-id path with ``labels != top`` -> the epsilon-softmax cases.

Tolerance (as in test_losses_values.py): the library computes in float32; each formula is at most a few dozen
roundings of values of order 1-10 with cancellations below 10x for these logits, so rtol 1e-5 / atol 1e-6.
"""

import numpy as np
import pytest

import robust_losses as rl
from tests.views import views_of

K = 5
LOGITS = np.array(
  [
    [3.0, 0.5, -1.0, 0.2, 1.1],
    [0.3, 0.1, -0.2, 0.4, -0.6],
    [2.5, -1.5, 0.0, -0.5, 0.7],
    [0.0, 1.0, 0.5, -2.0, 1.5],
    [-1.2, 0.8, 2.2, 0.1, -0.3],
    [1.7, 1.6, -0.4, 0.9, 0.0],
  ],
  np.float32,
)
IDS = np.array([0, 3, 4, 1, 2, 1])  # labelled class: the argmax in rows 0 and 4, another class elsewhere
T = np.array(
  [
    [0.60, 0.25, 0.10, 0.05, 0.00],
    [0.05, 0.70, 0.15, 0.00, 0.10],
    [0.00, 0.10, 0.55, 0.30, 0.05],
    [0.20, 0.00, 0.05, 0.65, 0.10],
    [0.10, 0.05, 0.00, 0.15, 0.70],
  ]
)
ROWS = np.arange(len(IDS))


def log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


LP = log_softmax(LOGITS)
P = np.exp(LP)
LP_Y, P_Y = LP[ROWS, IDS], P[ROWS, IDS]
Y = np.eye(K)[IDS]
CE = -LP_Y


def lq(p, q):
  return (1 - p**q) / q


def nce():
  return LP_Y / LP.sum(-1)


def nfl(gamma):
  t = -((1 - P) ** gamma) * LP
  return t[ROWS, IDS] / t.sum(-1)


def ngce(q):
  t = 1 - P**q
  return t[ROWS, IDS] / t.sum(-1)


def eps_ce(m, min_prob):
  q = (P + m * (np.arange(K) == P.argmax(-1)[:, None])) / (1 + m)
  return -np.log(np.maximum(q[ROWS, IDS], min_prob))


def nnce(min_prob=1e-7):
  big_a = -np.log(np.float32(min_prob)).astype(np.float64)
  t = big_a + np.maximum(LP, np.log(np.float32(min_prob)))
  return 1 - t[ROWS, IDS] / t.sum(-1)


def nnfl(gamma=0.5, min_prob=1e-7):
  log_mp = float(np.log(np.float32(min_prob)))
  big_a = -((1 - np.float32(min_prob)) ** gamma) * log_mp
  lp = np.maximum(LP, log_mp)
  t = big_a + ((1 - np.exp(lp)) ** gamma) * lp
  return 1 - t[ROWS, IDS] / t.sum(-1)


def sigmoid_bce():
  z = LOGITS.astype(np.float64)
  return (np.logaddexp(0, -z) * Y + np.logaddexp(0, z) * (1 - Y)).mean(-1)


def ldr_kl(lam=10.0, margin=0.1):
  sp = np.logaddexp(0, LOGITS.astype(np.float64))
  s = K * sp / sp.sum(-1, keepdims=True)
  x = (margin * (1 - Y) + s - s[ROWS, IDS][:, None]) / lam
  return lam * np.log(np.exp(x).mean(-1))


def jensen_shannon(pi=0.7):
  m = pi * Y + (1 - pi) * P
  kl_y = np.log(1 / m[ROWS, IDS])
  kl_p = (P * (LP - np.log(m))).sum(-1)
  return -(pi * kl_y + (1 - pi) * kl_p) / ((1 - pi) * np.log(1 - pi))


def logit_clip(tau):
  z = LOGITS.astype(np.float64)
  norm = np.sqrt((z * z).sum(-1, keepdims=True)) + 1e-7
  clipped = np.where(norm > 1 / tau, z / norm / tau, z)
  return -log_softmax(clipped)[ROWS, IDS]


def elr(beta=0.7, lam=3.0, targets=0.1):
  p = np.clip(P, 1e-4, 1 - 1e-4)
  new = beta * targets + (1 - beta) * p / p.sum(-1, keepdims=True)
  return CE + lam * np.log(1 - (new * p).sum(-1))


def sparse_regularization(epoch=3, tau=0.5, p=0.1, lam=1.2, rho=1.03):
  z = LOGITS.astype(np.float64)
  u = z / (tau * np.sqrt((z * z).sum(-1, keepdims=True)))
  lp = log_softmax(u)
  return -lp[ROWS, IDS] + lam * rho**epoch * (np.maximum(np.exp(lp), 1e-7) ** p).sum(-1)


def anorm(a=1.5, p=0.9):
  pc = np.maximum(P, 1e-5)
  others = np.where(Y == 1, 0.0, pc**p).sum(-1)
  return ((a - pc[ROWS, IDS]) ** p - (a - 1) ** p + others) / p


def phuber_gce(q=0.7, tau=10.0):
  p_star = tau ** (1 / (q - 1))
  return np.where(P_Y <= p_star, -tau * P_Y + tau * p_star + lq(p_star, q), lq(P_Y, q))


def anl_entropy_regularized(alpha=5.0, beta=5.0, lam=2.0, min_prob=1e-7):
  p = np.clip(P, min_prob, 1 - min_prob)
  mean = np.clip(p.sum(0) / p.sum(), min_prob, 1 - min_prob)
  return alpha * nce() + beta * nnce(min_prob) + lam * (np.log(K) + (mean * np.log(mean)).sum())


def gjs(weights=(0.9, 0.05, 0.05)):
  views = [np.exp(log_softmax(LOGITS * (1.0 + 0.3 * i))) for i in range(len(weights) - 1)]
  m = weights[0] * Y + sum(w * v for w, v in zip(weights[1:], views))
  kl = weights[0] * -np.log(m[ROWS, IDS]) + sum(w * (v * np.log(v / m)).sum(-1) for w, v in zip(weights[1:], views))
  return -kl / ((1 - weights[0]) * np.log(1 - weights[0]))


def ogc(t, base="ce", official_value=True, gamma=0.5, q=0.7):
  loss = {"ce": lambda p: -np.log(p), "gce": lambda p: lq(p, q), "fl": lambda p: -((1 - p) ** gamma) * np.log(p)}[base]
  grad = {
    "ce": lambda p: -1 / p,
    "gce": lambda p: -(p ** (q - 1)),
    "fl": lambda p: gamma * np.log(p) * (1 - p) ** (gamma - 1) - (1 - p) ** gamma / p,
  }[base]
  tau = abs(grad(t))
  below = (1.0 if official_value else tau * t) + loss(t)
  p_y = np.clip(P_Y, 1e-7, 1 - 1e-7)
  return np.where(p_y <= t, below - tau * p_y, loss(p_y))


def clipped(losses, quantile):
  return np.minimum(losses, np.quantile(losses, quantile))


A = -4.0
CASES = [
  ("softmax_cross_entropy", {}, lambda: CE),
  ("sigmoid_binary_cross_entropy", {}, sigmoid_bce),
  ("mean_absolute_error", {}, lambda: 2 * (1 - P_Y)),
  ("mean_squared_error", {}, lambda: ((Y - P) ** 2).sum(-1)),
  ("focal_loss", {}, lambda: -((1 - P_Y) ** 0.5) * LP_Y),
  ("focal_loss", {"gamma": 2.0}, lambda: -((1 - P_Y) ** 2) * LP_Y),
  ("bootstrapped_cross_entropy", {}, lambda: 0.95 * CE - 0.05 * (P * LP).sum(-1)),
  ("bootstrapped_cross_entropy", {"beta": 0.8, "mode": "hard"}, lambda: 0.8 * CE - 0.2 * LP.max(-1)),
  ("tamed_cross_entropy", {}, lambda: ((1 + CE) ** -0.5 - 1) / -0.5),
  ("tamed_cross_entropy", {"alpha": 1.0}, lambda: np.log1p(CE)),
  ("generalized_cross_entropy", {}, lambda: lq(P_Y, 0.7)),
  ("truncated_generalized_cross_entropy", {}, lambda: np.where(P_Y > 0.5, lq(P_Y, 0.7), lq(0.5, 0.7))),
  ("reverse_cross_entropy", {}, lambda: -A * (1 - P_Y)),
  ("symmetric_cross_entropy", {}, lambda: 0.1 * CE - A * (1 - P_Y)),
  ("symmetric_cross_entropy", {"alpha": 6.0, "beta": 0.1, "A": -6.0}, lambda: 6.0 * CE + 0.6 * (1 - P_Y)),
  ("normalized_cross_entropy", {}, nce),
  ("normalized_focal_loss", {}, lambda: nfl(0.5)),
  ("normalized_generalized_cross_entropy", {}, lambda: ngce(0.7)),
  ("active_passive_loss", {}, lambda: nce() - A * (1 - P_Y)),
  ("active_passive_loss", {"active": "nfl", "passive": "mae", "beta": 0.5}, lambda: nfl(0.5) + (1 - P_Y)),
  ("active_passive_loss", {"active": "ngce", "passive": "nrce"}, lambda: ngce(0.7) + (1 - P_Y) / (K - 1)),
  ("active_passive_loss", {"active": "ce", "passive": "nmae"}, lambda: CE + (1 - P_Y) / (K - 1)),
  ("active_passive_loss", {"active": "fl", "passive": "rce"}, lambda: -((1 - P_Y) ** 0.5) * LP_Y - A * (1 - P_Y)),
  ("forward_corrected_cross_entropy", {"transition_matrix": T}, lambda: -np.log((P @ T)[ROWS, IDS])),
  ("backward_corrected_cross_entropy", {"transition_matrix": T}, lambda: -(np.linalg.inv(T)[IDS] * LP).sum(-1)),
  ("epsilon_softmax_cross_entropy", {"m": 10.0}, lambda: eps_ce(10.0, 1e-8)),
  ("epsilon_softmax_cross_entropy", {"m": 1e5, "min_prob": 0.0}, lambda: eps_ce(1e5, 0.0)),
  ("epsilon_softmax_cross_entropy_mae", {"m": 100.0}, lambda: 0.01 * eps_ce(100.0, 1e-8) + 5 * 2 * (1 - P_Y)),
  ("asymmetric_generalized_cross_entropy", {}, lambda: (1.6**0.6 - (0.6 + P_Y) ** 0.6) / 0.6),
  ("asymmetric_unhinged_loss", {}, lambda: ((5.5 - P_Y) ** 3 - 4.5**3) / 3),
  ("asymmetric_exponential_loss", {}, lambda: np.exp(-P_Y / 2.5)),
  ("nce_asymmetric_loss", {}, lambda: nce() + 4 * (7.0**1.5 - (6 + P_Y) ** 1.5) / 1.5),
  ("nce_asymmetric_loss", {"passive": "ael", "a": 5.0}, lambda: nce() + 4 * np.exp(-P_Y / 5)),
  ("asymmetric_mean_squared_error", {}, lambda: ((P - 30 * Y) ** 2).sum(-1) / K),
  ("joint_asymmetric_loss", {}, lambda: nce() + ((P - 30 * Y) ** 2).sum(-1) / K),
  ("joint_asymmetric_loss", {"active": "nfl"}, lambda: nfl(0.5) + ((P - 30 * Y) ** 2).sum(-1) / K),
  ("normalized_negative_cross_entropy", {}, nnce),
  ("normalized_negative_focal_loss", {}, nnfl),
  ("active_negative_loss", {}, lambda: 5 * nce() + 5 * nnce()),
  ("active_negative_loss", {"active": "nfl"}, lambda: 5 * nfl(0.5) + 5 * nnfl()),
  ("ldr_kl_loss", {}, ldr_kl),
  ("ldr_kl_loss", {"lam": 1.0}, lambda: ldr_kl(lam=1.0)),
  ("jensen_shannon_divergence", {}, jensen_shannon),
  ("taylor_cross_entropy", {}, lambda: (1 - P_Y) + (1 - P_Y) ** 2 / 2),
  ("logit_clipping", {"tau": 0.5}, lambda: logit_clip(0.5)),
  (
    "partially_huberised_cross_entropy",
    {},
    lambda: np.where(P_Y <= 0.5, -2 * P_Y + np.log(2) + 1, CE),
  ),
  ("asymmetric_norm_loss", {}, anorm),
  ("asymmetric_norm_loss", {"a": 2.0, "p": 0.7}, lambda: anorm(2.0, 0.7)),
  ("nce_asymmetric_loss", {"passive": "anorm", "a": 2.0, "q": 0.7}, lambda: nce() + 4 * anorm(2.0, 0.7)),
  ("partially_huberised_generalized_cross_entropy", {}, phuber_gce),
  ("partially_huberised_generalized_cross_entropy", {"tau": 1.5}, lambda: phuber_gce(tau=1.5)),
  ("active_negative_loss_entropy_regularized", {}, anl_entropy_regularized),
  ("generalized_jensen_shannon_divergence", {}, gjs),
  ("generalized_jensen_shannon_divergence", {"js_weights": (0.5, 0.2, 0.2, 0.1)}, lambda: gjs((0.5, 0.2, 0.2, 0.1))),
  ("optimized_gradient_clipping", {}, lambda: ogc(1e-7)),
  ("optimized_gradient_clipping", {"threshold": 0.3}, lambda: ogc(0.3)),
  ("optimized_gradient_clipping", {"threshold": 0.3, "base": "gce"}, lambda: ogc(0.3, "gce")),
  (
    "optimized_gradient_clipping",
    {"threshold": 0.3, "base": "fl", "official_value": False},
    lambda: ogc(0.3, "fl", False),
  ),
  ("clipped_cross_entropy", {"statistic": "quantile", "quantile": 0.6}, lambda: clipped(CE, 0.6)),
  ("clipped_focal_loss", {"statistic": "median"}, lambda: clipped(-((1 - P_Y) ** 0.5) * LP_Y, 0.5)),
  ("binary_cross_entropy_dynamic_clipping", {"statistic": "median"}, lambda: clipped(sigmoid_bce(), 0.5)),
  ("oracle_small_loss_selection", {"noise_rate": 0.4, "base": "ce"}, lambda: clipped(CE, 0.6)),
]
EXTRAS = {
  "early_learning_regularization": {"targets": np.full(LOGITS.shape, 0.1, np.float32)},
  "sparse_regularization": {"epoch": 3},
  # Past the clipping losses' default warm-up of 5 epochs, so they clip.
  **{
    name: {"epoch": 5}
    for name in ("clipped_cross_entropy", "clipped_focal_loss", "binary_cross_entropy_dynamic_clipping")
  },
}
CASES += [("early_learning_regularization", {}, elr), ("sparse_regularization", {}, sparse_regularization)]


def test_every_loss_with_a_class_id_path_is_covered():
  assert {name for name, _, _ in CASES} == set(rl.names()) - {"bi_tempered_logistic_loss"}


@pytest.mark.parametrize(
  "name,hparams,formula",
  CASES,
  ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in h.items() if k != 'transition_matrix')}" for n, h, _ in CASES],
)
def test_class_id_path_value(name, hparams, formula):
  fn = getattr(rl, name)
  logits = LOGITS
  if name == "generalized_jensen_shannon_divergence":  # the views of tests/views.py: logits scaled by 1 + 0.3 i
    logits = views_of(LOGITS, len(hparams.get("js_weights", (0.9, 0.05, 0.05))) - 1)
  losses = fn(logits, IDS, **hparams, **EXTRAS.get(name, {}))
  np.testing.assert_allclose(np.asarray(losses, np.float64), formula(), rtol=1e-5, atol=1e-6)
