r"""Divergence-based losses: Jensen-Shannon (Englesson & Azizpour, NeurIPS 2021) and LDR-KL (Zhu et al.,
ICML 2023)."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils

_JS_FLOOR = 1e-7  # the official clamp inside every log


def jensen_shannon_divergence(
  logits: ArrayLike, labels: ArrayLike, *, pi: float = 0.7, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Scaled weighted Jensen-Shannon divergence between label and prediction (Englesson & Azizpour).

  .. math:: \mathcal{L} = Z \left[\pi\,\mathrm{KL}(y \| m) + (1 - \pi)\,\mathrm{KL}(p \| m)\right],
     \quad m = \pi y + (1 - \pi) p,\quad Z = \frac{-1}{(1 - \pi)\log(1 - \pi)}.

  Z makes the loss go from CE (:math:`\pi \to 0`) to MAE/2 (:math:`\pi \to 1`), like GCE's q: a larger
  label weight π gives a more robust, more MAE-like loss with smaller gradients on contradicted samples.
  As in the official code (``JensenShannonDivergenceWeightedScaled``), every log reads its argument
  clamped below at 1e-7 (:math:`\log m` also above at 1), with zero gradient through the clamp; terms
  with :math:`d_k = 0` contribute 0. Defaults: π = 0.7 (CIFAR-10 symmetric 20-40% noise); 0.9 for
  CIFAR-10 60-80%; CIFAR-100 symmetric 40% π = 0.3 (per-noise values in the authors' ``scripts/``).
  This is the one-view JS; GJS (several augmented views) is not implemented.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    pi: weight of the label distribution, in (0, 1).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Englesson & Azizpour, `Generalized Jensen-Shannon Divergence Loss for Learning with Noisy Labels
    <https://arxiv.org/abs/2105.04522>`_, NeurIPS 2021; code ``ErikEnglesson/GJS``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.jensen_shannon_divergence(logits, labels, pi=0.7))
    [0.1556 0.4233 1.2428]
  """
  _utils.check_range("pi", pi, 0.0, 1.0, lo_open=True, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  y = _utils.one_hot(logits, labels)  # KL(p || m) needs every class, so ids are expanded
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  m = pi * y + (1.0 - pi) * p
  log_floor = math.log(_JS_FLOOR)
  log_m = jnp.log(jnp.clip(m, _JS_FLOOR, 1.0))
  log_y = jnp.log(jnp.maximum(y, _JS_FLOOR))
  kl_y = jnp.sum(y * (log_y - log_m), axis=-1)
  kl_p = jnp.sum(p * (jnp.maximum(log_p, log_floor) - log_m), axis=-1)
  scale = -1.0 / ((1.0 - pi) * jnp.log1p(-jnp.asarray(pi, jnp.float32)))
  return _utils.mask(scale * (pi * kl_y + (1.0 - pi) * kl_p), where)


def _normalized_softplus(logits):
  """softplus(z) / mean_k softplus(z), as K softmax(log softplus(z)): finite even when every softplus
  underflows (all logits below about -104), where the ratio is still well defined."""
  sp = jax.nn.softplus(logits)
  # log softplus(z) = z + log1p(-e^z/2 + ...) -> z for z << 0 (error below e^-30 there).
  small = logits < -30.0
  log_sp = jnp.where(small, logits, jnp.log(jnp.where(small, 1.0, sp)))
  return logits.shape[-1] * jax.nn.softmax(log_sp, axis=-1)


def ldr_kl_loss(
  logits: ArrayLike, labels: ArrayLike, *, lam: float = 10.0, margin: float = 0.1, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Label-distributionally robust loss with KL regularisation (LDR-KL; Zhu, Ying & Yang, ICML 2023).

  .. math:: \mathcal{L} = \lambda \log \frac1K \sum_k \exp\!\left(\frac{\text{margin}\,(1 - y_k)
     + s_k - s_y}{\lambda}\right),\quad s = \frac{\mathrm{softplus}(z)}{\frac1K\sum_j
     \mathrm{softplus}(z_j)}.

  The max over label distributions of the margin loss, regularised by KL to uniform with strength
  :math:`\lambda`: :math:`\lambda \to 0` is the top-1 margin (hinge) loss, :math:`\lambda \to \infty`
  the average margin over classes, which is symmetric (noise tolerant). Gradient: a softmax-weighted
  (temperature λ) push of :math:`s_y` above the other :math:`s_k`; scores are normalised softplus
  values, so bounded. Soft labels use :math:`s_y = \sum_k y_k s_k` and margin :math:`(1 - y_k)`.
  Defaults :math:`\lambda = 10` (CIFAR-10), margin 0.1 (``--margin`` of the official experiments);
  CIFAR-100 and WebVision use :math:`\lambda = 1`. Same as the official ``LDRLoss_V1``.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    lam: KL regularisation strength λ, > 0.
    margin: margin between the label and the other classes, >= 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhu, Ying & Yang, `Label Distributionally Robust Losses for Multi-class Classification: Consistency,
    Robustness and Adaptivity <https://arxiv.org/abs/2112.14869>`_, ICML 2023; code
    ``Optimization-AI/ICML2023_LDR``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.ldr_kl_loss(logits, labels, lam=10.0, margin=0.1))
    [-1.2197 -0.8021  0.11  ]
  """
  _utils.check_range("lam", lam, 0.0, lo_open=True)
  _utils.check_range("margin", margin, 0.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  s = _normalized_softplus(logits)
  y = _utils.one_hot(logits, labels)  # the margin term reads every class anyway
  if _utils.is_ids(logits, labels):
    s_y = _utils.at_label(s, labels)
  else:
    s_y = jnp.sum(y * s, axis=-1)
  x = (margin * (1.0 - y) + s - s_y[..., None]) / lam
  # log mean_k exp(x_k) = m + log1p(mean_k expm1(x_k - m)), m = max_k x_k (a constant, as in the official
  # code): no overflow, and no cancellation against log K when the loss is small (large lam).
  top = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
  loss = lam * (top[..., 0] + jnp.log1p(jnp.mean(jnp.expm1(x - top), axis=-1)))
  return _utils.mask(loss, where)
