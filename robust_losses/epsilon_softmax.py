r"""ε-softmax cross entropy (Wang et al., NeurIPS 2024).

ε-softmax moves mass m onto the predicted class before normalising:
:math:`q = (p + m\,e_{\hat t}) / (1 + m)`, :math:`\hat t = \arg\max_k p_k`. CE on q is then nearly
constant in the prediction (an "ε-relaxed" symmetric loss), which gives noise tolerance; it is combined
with MAE for fitting.

**Probability floor.** The official code clamps q at 1e-8 before the log (and the paper's protocol lists
this "log floor"): for a sample whose label is not the argmax, :math:`q_y = p_y / (1 + m) < 10^{-8}`
makes the loss the constant :math:`-\log 10^{-8}` with **zero gradient** — for m = 1e5, every sample
with :math:`p_y \lesssim 10^{-3}` that the model does not predict. Without the floor such a sample gets
CE's full gradient (:math:`-\log q_y = \mathrm{CE} + \log(1 + m)`). That truncation is part of the
method as published and evaluated, so the floor is the default (``min_prob=1e-8``); ``min_prob=0``
gives the unclamped formula.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, symmetric


def _eps_log_q(log_probs, is_top, m, min_prob):
  """log q_k for log p_k; is_top marks the argmax class. Exact in float32 for m >> 1."""
  # argmax class: log((p + m) / (1 + m)) = log1p(-(1 - p) / (1 + m)), with 1 - p = -expm1(log p).
  # Other classes read log p = 0 there, so the unselected branch stays finite (p_top >= 1/K anyway).
  top = jnp.log1p(jnp.expm1(jnp.where(is_top, log_probs, 0.0)) / (1.0 + m))
  other = log_probs - jnp.log1p(m)
  log_q = jnp.where(is_top, top, other)

  def floored():
    # max(q, min_prob) in log space; zero gradient below the floor, as torch.clamp.
    return jnp.maximum(log_q, jnp.log(_utils.safe_nonzero(jnp.asarray(min_prob, jnp.float32))))

  return _utils.select(min_prob == 0, lambda: log_q, floored)


def _eps_ce(logits, labels, m, min_prob):
  top = jnp.argmax(logits, axis=-1)  # first index on ties, as torch.argmax of the softmax
  if _utils.is_ids(logits, labels):
    return -_eps_log_q(_utils.label_log_prob(logits, labels), labels == top, m, min_prob)
  is_top = jnp.arange(logits.shape[-1]) == top[..., None]
  log_q = _eps_log_q(jax.nn.log_softmax(logits, axis=-1), is_top, m, min_prob)
  return -jnp.sum(labels * log_q, axis=-1)


def _check(m, min_prob):
  _utils.check_range("m", m, 0.0)
  _utils.check_range("min_prob", min_prob, 0.0, 1.0, hi_open=True)


def epsilon_softmax_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, m: float = 1e5, min_prob: float = 1e-8, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""CE on ε-softmax: :math:`-\log \max(q_y, \text{min\_prob})`, :math:`q = (p + m\,e_{\hat t})/(1+m)`.

  For the predicted class :math:`-\log q_y = -\log(1 - (1 - p_y)/(1 + m)) \approx (1 - p_y)/(1 + m)`:
  a tiny MAE-like loss; for any other class :math:`\mathrm{CE} + \log(1 + m)` until the floor (see the
  module docstring: the default floor 1e-8 of the official code zeroes the gradient of contradicted
  samples; ``min_prob=0`` disables it). m is the inverse of the paper's ε. Defaults m = 1e5 (CIFAR-10
  symmetric noise); CIFAR-10 asymmetric 1e3; CIFAR-100 symmetric 1e4, asymmetric 1e2; WebVision 1e3.
  Usually combined with MAE (:func:`epsilon_softmax_cross_entropy_mae`). The argmax ignores ties beyond
  the first index (as the official ``argmax``); :math:`\hat t` carries no gradient.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    m: mass added to the predicted class, >= 0 (m = 0 is CE).
    min_prob: floor on q before the log, in [0, 1); 0 disables it.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wang et al., `ε-Softmax: Approximating One-Hot Vectors for Mitigating Label Noise
    <https://openreview.net/forum?id=vjsd8Bcipv>`_, NeurIPS 2024; code ``cswjl/eps-softmax``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.epsilon_softmax_cross_entropy(logits, labels, m=1e5))
    [1.4870e-06 3.7424e-06 1.3474e+01]
    >>> print(rl.epsilon_softmax_cross_entropy(logits, labels, m=0.0))  # m = 0 is softmax CE
    [0.161  0.4688 1.9612]
  """
  _check(m, min_prob)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_eps_ce(logits, labels, m, min_prob), where)


def epsilon_softmax_cross_entropy_mae(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  alpha: float = 0.01,
  beta: float = 5.0,
  m: float = 1e5,
  min_prob: float = 1e-8,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r""":math:`\alpha\,\mathrm{CE}_\epsilon + \beta\,\mathrm{MAE}` (Wang et al., NeurIPS 2024).

  **MAE scale:** MAE here is :math:`\sum_k |y_k - p_k| = 2(1 - p_y)` for one-hot labels, as the
  official ``MAELoss(scale=2.0)`` (APL/ANL's MAE is :math:`1 - p_y`, so their β are not portable).
  CE_ε is :func:`epsilon_softmax_cross_entropy` (official floor 1e-8 by default). The official
  hyperparameters depend on the noise: CIFAR-10 symmetric :math:`\alpha=0.01, \beta=5, m=10^5`
  (default), asymmetric :math:`\alpha=0.02, \beta=5, m=10^3`; CIFAR-100 :math:`\beta=1`, symmetric
  :math:`m=10^4` with :math:`\alpha` = 0.1 / 0.05 / 0.03 / 0.00125 / 0.0075 for η = 0 / .2 / .4 / .6 /
  .8, asymmetric :math:`m=10^2` with :math:`\alpha` = 0.015 / 0.007 / 0.005 / 0.004 for η = .1 / .2 / .3
  / .4; WebVision :math:`\alpha=0.015, \beta=0.3, m=10^3`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    alpha: weight of CE_ε, >= 0.
    beta: weight of MAE, >= 0.
    m: mass added to the predicted class, >= 0.
    min_prob: floor on q in CE_ε, in [0, 1); 0 disables it.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wang et al., `ε-Softmax: Approximating One-Hot Vectors for Mitigating Label Noise
    <https://openreview.net/forum?id=vjsd8Bcipv>`_, NeurIPS 2024; code ``cswjl/eps-softmax``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.epsilon_softmax_cross_entropy_mae(logits, labels, alpha=0.01, beta=5.0, m=1e5))
    [1.487  3.7424 8.7279]
  """
  _check(m, min_prob)
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  loss = alpha * _eps_ce(logits, labels, m, min_prob) + beta * symmetric._mae_terms(logits, labels)
  return _utils.mask(loss, where)
