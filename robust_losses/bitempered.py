r"""Bi-tempered logistic loss (Amid, Warmuth, Anil & Koren, NeurIPS 2019).

Two temperatures replace the log and exp of the logistic loss by their tempered versions

.. math:: \log_t(x) = \frac{x^{1-t} - 1}{1 - t}, \qquad \exp_t(x) = [1 + (1 - t) x]_+^{1/(1-t)}

(both the ordinary log/exp at t = 1). ``t2 > 1`` gives the tempered softmax
:math:`p = \exp_{t_2}(z - \lambda(z))` heavier tails, so a sample far on the wrong side of the boundary
does not get a vanishing probability; ``t1 < 1`` makes the loss bounded, so such a sample cannot dominate.
The normaliser :math:`\lambda` has no closed form for :math:`t_2 \neq 1` and is found by a fixed-point
iteration. This follows Google's JAX reference implementation (github.com/google/bi-tempered-loss),
including its analytic (custom) gradient and its label-smoothing convention.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils


def _log_t_from_log(log_x, t):
  """log_t(x) from log(x): expm1((1 - t) log x) / (1 - t), which is log x at t = 1."""
  return _utils.select(t == 1, lambda: log_x, lambda: jnp.expm1((1.0 - t) * log_x) / _utils.safe_nonzero(1.0 - t))


def _tempered_log_softmax_heavy_tail(logits, t2, num_iters):
  """log of the tempered softmax for t2 > 1, via the reference fixed-point iteration for lambda."""
  one_minus_t2 = 1.0 - t2
  mu = jnp.max(logits, axis=-1, keepdims=True)
  a0 = logits - mu

  def exp_t(a):  # for t2 > 1 and a <= 0 the base is >= 1, so no clamp at 0 is needed
    return jnp.power(1.0 + one_minus_t2 * a, 1.0 / one_minus_t2)

  a = a0
  for _ in range(num_iters):
    partition = jnp.sum(exp_t(a), axis=-1, keepdims=True)
    a = a0 * jnp.power(partition, one_minus_t2)
  partition = jnp.sum(exp_t(a), axis=-1, keepdims=True)
  # lambda - mu = -log_t(1 / partition); the tempered log-probabilities are then log(exp_t(a0 - that)).
  shift = -(jnp.power(partition, t2 - 1.0) - 1.0) / one_minus_t2
  return jnp.log1p(one_minus_t2 * (a0 - shift)) / one_minus_t2


def _tempered_log_softmax(logits, t2, num_iters):
  def heavy_tail():
    # Under tracing both branches run; t2 = 1 would divide by zero in the fixed point.
    return _tempered_log_softmax_heavy_tail(logits, jnp.where(t2 == 1, 2.0, t2), num_iters)

  return _utils.select(t2 == 1, lambda: jax.nn.log_softmax(logits, axis=-1), heavy_tail)


def _loss_from_log_probs(log_probs, labels, t1):
  r"""sum_k y_k (log_t1 y_k - log_t1 p_k) - (y_k^{2-t1} - p_k^{2-t1}) / (2 - t1): a Bregman divergence."""
  positive = labels > 0
  log_labels = jnp.log(jnp.where(positive, labels, 1.0))
  label_term = jnp.where(positive, labels * _log_t_from_log(log_labels, t1), 0.0)
  cross_term = labels * _log_t_from_log(log_probs, t1)
  power_term = (jnp.exp((2.0 - t1) * log_labels) * positive - jnp.exp((2.0 - t1) * log_probs)) / (2.0 - t1)
  return jnp.sum(label_term - cross_term - power_term, axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _bi_tempered(logits, labels, t1, t2, static):
  return _bi_tempered_parts(logits, labels, t1, t2, static)[0]


def _bi_tempered_parts(logits, labels, t1, t2, static):
  # `static` = (num_iters, t1, t2) with each temperature a Python float when it was concrete (None when
  # traced): the special cases t = 1 are then picked in Python, exactly and without computing the others.
  num_iters, static_t1, static_t2 = static
  t1_ = t1 if static_t1 is None else static_t1
  t2_ = t2 if static_t2 is None else static_t2
  log_probs = _tempered_log_softmax(logits, t2_, num_iters)
  loss = _utils.select(
    (t1_ == 1) & (t2_ == 1),
    # Exactly CE (KL for soft labels) in the logistic case, as in the reference.
    lambda: jnp.sum(
      jnp.where(labels > 0, labels * jnp.log(jnp.where(labels > 0, labels, 1.0)), 0.0) - labels * log_probs, axis=-1
    ),
    lambda: _loss_from_log_probs(log_probs, labels, t1_),
  )
  return loss, log_probs


@_bi_tempered.defjvp
def _bi_tempered_jvp(static, primals, tangents):
  logits, labels, t1, t2 = primals
  loss, log_probs = _bi_tempered_parts(logits, labels, t1, t2, static)
  # The reference's analytic gradient at the exact normaliser (the fixed-point iterations are not
  # differentiated through); labels and temperatures get none. Escort distribution p^t2 / sum p^t2 =
  # softmax(t2 log p).
  probs = jnp.exp(log_probs)
  forget = (probs - labels) * jnp.exp((t2 - t1) * log_probs)
  escorts = jax.nn.softmax(t2 * log_probs, axis=-1)
  grad = forget - escorts * jnp.sum(forget, axis=-1, keepdims=True)
  return loss, jnp.sum(grad * tangents[0], axis=-1)


def bi_tempered_logistic_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  t1: float = 1.0,
  t2: float = 1.0,
  num_iters: int = 5,
  label_smoothing: float = 0.0,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Bi-tempered logistic loss: a Bregman divergence between labels and the tempered softmax.

  .. math:: L = \sum_k y_k (\log_{t_1} y_k - \log_{t_1} p_k)
                - \frac{1}{2 - t_1} (y_k^{2 - t_1} - p_k^{2 - t_1}),
            \qquad p = \exp_{t_2}(z - \lambda(z)).

  ``t1 < 1`` bounds the loss (an outlier's loss cannot grow without limit, unlike CE); ``t2 > 1`` gives
  the softmax heavy tails, so the gradient of a sample far from its label's side of the boundary is
  small. The gradient is the reference's analytic one,
  :math:`\nabla_z L = (p - y) p^{t_2 - t_1} - \tilde{p} \sum_k (p_k - y_k) p_k^{t_2 - t_1}` with the
  escort distribution :math:`\tilde{p} \propto p^{t_2}`; no gradient flows into labels or temperatures.

  t1 = t2 = 1 is the logistic loss: exactly CE for one-hot labels (for soft labels the reference's
  :math:`\mathrm{KL}(y \| p) = \mathrm{CE} - H(y)`, which has the same gradient). Defaults t1 = t2 = 1
  (plain CE) because good temperatures are task dependent; the paper's noisy-label runs use e.g.
  t1 = 0.8, t2 = 1.2. Only the heavy-tailed regime :math:`t_2 \ge 1` (the paper's robust setting) is
  supported; :math:`t_2 < 1` (finite support, binary-search normaliser) is not implemented.

  Args:
    logits: [..., K] unnormalised scores (activations).
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    t1: temperature of the log, in (0, 1] (< 1 for a bounded loss).
    t2: temperature of the exp, >= 1 (> 1 for heavy tails).
    num_iters: fixed-point iterations for the normaliser (static int >= 1; the reference uses 5).
    label_smoothing: in [0, 1); the reference's convention: the labelled class keeps mass
      1 - label_smoothing and the rest is spread evenly over the other K - 1 classes,
      :math:`y \leftarrow (1 - \frac{K}{K-1} s) y + \frac{s}{K-1}`.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Amid et al., `Robust Bi-Tempered Logistic Loss Based on Bregman Divergences
    <https://arxiv.org/abs/1906.03361>`_, NeurIPS 2019.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.bi_tempered_logistic_loss(logits, labels, t1=0.8, t2=1.2))
    [0.169  0.4091 1.3503]
    >>> print(rl.bi_tempered_logistic_loss(logits, labels, t1=1.0, t2=1.0))  # t1 = t2 = 1 is softmax CE
    [0.161  0.4688 1.9612]
  """
  _utils.check_range("t1", t1, 0.0, 1.0, lo_open=True)
  _utils.check_range("t2", t2, 1.0)
  _utils.check_int("num_iters", num_iters, 1)
  _utils.check_range("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  labels = _utils.one_hot(logits, labels)  # the tempered normaliser needs every class anyway
  num_classes = logits.shape[-1]
  if num_classes > 1:
    labels = (1.0 - num_classes / (num_classes - 1) * label_smoothing) * labels + label_smoothing / (num_classes - 1)
  static = (num_iters, *(float(t) if _utils.is_concrete(t) else None for t in (t1, t2)))
  loss = _bi_tempered(
    logits, jax.lax.stop_gradient(labels), jnp.asarray(t1, logits.dtype), jnp.asarray(t2, logits.dtype), static
  )
  return _utils.mask(loss, where)
