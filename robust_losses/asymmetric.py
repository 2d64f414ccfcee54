r"""Asymmetric losses: AGCE, AUL, AEL (Zhou et al., ICML 2021), ANorm (Zhou et al., TPAMI 2023) and AMSE / JAL
(Wang et al., ICCV 2025).

A loss is *asymmetric* (Zhou et al.) if, roughly, it pushes the prediction all the way to the label's
class whenever the label is the most likely clean class: a weaker condition than symmetry that still
gives noise tolerance under (class-dependent) noise while allowing better fitting. The asymmetric losses
below only depend on :math:`p_y` (ANorm and AMSE also on the other :math:`p_k`); they are usually combined with
NCE as the active term.

All functions take soft labels too: the label-weighted sum of the per-class terms, which for one-hot
labels is exactly the formula at :math:`p_y`.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, negative, symmetric


# Differences of nearby powers are written as c^q expm1(q log1p(x)) with x small near p = 1 (1 - p from
# expm1(log p)), which avoids the cancellation of (a + 1)^q - (a + p)^q in float32.
def _agce_terms(log_probs, a, q):
  # (a + 1)^q - (a + p)^q = -(a + 1)^q expm1(q log1p((p - 1) / (a + 1))).
  return -jnp.power(a + 1.0, q) * jnp.expm1(q * jnp.log1p(jnp.expm1(log_probs) / (a + 1.0))) / q


def _aul_terms(log_probs, a, q):
  # (a - p)^q - (a - 1)^q = (a - 1)^q expm1(q log1p((1 - p) / (a - 1))); a - p >= a - 1 > 0.
  return jnp.power(a - 1.0, q) * jnp.expm1(q * jnp.log1p(-jnp.expm1(log_probs) / (a - 1.0))) / q


def _ael_terms(log_probs, a):
  return jnp.exp(-jnp.exp(log_probs) / a)


def _check_agce(a, q):
  _utils.check_range("a", a, 0.0, lo_open=True)
  _utils.check_range("q", q, 0.0, lo_open=True)


def _check_aul(a, q):
  _utils.check_range("a", a, 1.0, lo_open=True)
  _utils.check_range("q", q, 0.0, lo_open=True)


def asymmetric_generalized_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, a: float = 0.6, q: float = 0.6, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Asymmetric generalized cross entropy :math:`((a + 1)^q - (a + p_y)^q) / q` (Zhou et al., 2021).

  Gradient: :math:`(a + p_y)^{q-1} p_y \nabla \mathrm{CE}`: like GCE, a sample's gradient grows with the
  model's confidence in its label, with :math:`a` flattening that weighting (large a, q = 1 is MAE-like).
  Zero at :math:`p_y = 1`. Official configs: CIFAR-10/100 a = 0.6, q = 0.6 (default); MNIST a = 4,
  q = 0.2. The official code computes the same on the unclamped softmax.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    a: > 0.
    q: > 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhou et al., `Asymmetric Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2106.03110>`_, ICML 2021; code ``hitcszx/ALFs``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.asymmetric_generalized_cross_entropy(logits, labels, a=0.6, q=0.6))
    [0.1256 0.3265 0.8177]
  """
  _check_agce(a, q)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: _agce_terms(lp, a, q)), where)


def asymmetric_unhinged_loss(
  logits: ArrayLike, labels: ArrayLike, *, a: float = 5.5, q: float = 3.0, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Asymmetric unhinged loss :math:`((a - p_y)^q - (a - 1)^q) / q` (AUL; Zhou et al., 2021).

  Gradient: :math:`-(a - p_y)^{q-1} \nabla p_y`; with q > 1 it is largest on low-confidence samples
  but bounded. Zero at :math:`p_y = 1`. Official configs: CIFAR-10/100 a = 5.5, q = 3 (default); MNIST
  a = 3, q = 0.1. (The official class is ``AUELoss``, registered as "AUL".)

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    a: > 1.
    q: > 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhou et al., `Asymmetric Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2106.03110>`_, ICML 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.asymmetric_unhinged_loss(logits, labels, a=5.5, q=3.0))
    [ 3.1118  8.2261 20.9355]
  """
  _check_aul(a, q)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: _aul_terms(lp, a, q)), where)


def asymmetric_exponential_loss(
  logits: ArrayLike, labels: ArrayLike, *, a: float = 2.5, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Asymmetric exponential loss :math:`\exp(-p_y / a)` (AEL; Zhou et al., 2021).

  Gradient: :math:`-\exp(-p_y/a)/a \cdot \nabla p_y`. As in the official code there is no constant
  offset, so the minimum (at :math:`p_y = 1`) is :math:`\exp(-1/a)`, not 0. Official configs:
  CIFAR-10/100 a = 2.5 (default); MNIST a = 3.5.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    a: > 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [exp(-1/a), 1].

  References:
    Zhou et al., `Asymmetric Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2106.03110>`_, ICML 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.asymmetric_exponential_loss(logits, labels, a=2.5))
    [0.7114 0.7786 0.9453]
  """
  _utils.check_range("a", a, 0.0, lo_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: _ael_terms(lp, a)), where)


ANORM_MIN_PROB = 1e-5  # the official clamp of p before the powers


def _check_anorm(a, p):
  _utils.check_range("a", a, 1.0, lo_open=True)
  _utils.check_range("p", p, 0.0, lo_open=True)


def _anorm(logits, labels, a, p):
  """sum_k y_k (|a - p_k|^p - (a - 1)^p) / p + (1 - y_k) p_k^p / p, p_k clamped below at 1e-5."""
  # For one-hot labels this is sum_k |a e_yk - p_k|^p - (a - 1)^p (over p); for soft labels the
  # label-weighted sum of that loss over the classes (the rows of y sum to 1). The label class's term
  # is the AUL term, free of the cancellation of (a - p_y)^p - (a - 1)^p near p_y = 1.
  log_probs = jnp.maximum(jax.nn.log_softmax(logits, axis=-1), math.log(ANORM_MIN_PROB))
  y = _utils.one_hot(logits, labels)
  return jnp.sum(y * _aul_terms(log_probs, a, p) + (1.0 - y) * jnp.exp(p * log_probs) / p, axis=-1)


def asymmetric_norm_loss(
  logits: ArrayLike, labels: ArrayLike, *, a: float = 1.5, p: float = 0.9, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Asymmetric p-norm loss (ANorm; Zhou et al., TPAMI 2023; official ``ANormLoss``).

  .. math:: \ell = \frac1p \Big(\sum_k |a\,e_{y,k} - p_k|^p - (a - 1)^p\Big)
     = \frac{(a - p_y)^p - (a - 1)^p + \sum_{k \ne y} p_k^p}{p},

  with every :math:`p_k` clamped below at :math:`10^{-5}` (zero gradient below), as in the official code.
  Zero at :math:`p_y = 1` (up to the clamp of the other classes). The label term is AUL's (exponent
  :math:`p` for its :math:`q`); the other classes add :math:`p_k^p / p`, a passive push-down of the
  competing classes whose gradient :math:`p_k^{p-1}` is largest on small :math:`p_k` for :math:`p < 1`.
  Soft labels use the label-weighted sum of the loss over the classes.

  Defaults a = 1.5, p = 0.9: the class defaults of ``ANormLoss`` (no dataset config of the authors uses
  ANorm; their ``NCEandANL`` defaults are a = 2, p = 0.7, see :func:`nce_asymmetric_loss`). The ANL
  repository vendors an identical copy.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    a: label scale, > 1.
    p: exponent, > 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhou et al., `Asymmetric Loss Functions for Noise-tolerant Learning: Theory and Applications
    <https://ieeexplore.ieee.org/document/10039708>`_, TPAMI 2023 (extends the ICML 2021 paper); code
    ``hitcszx/ALFs``, ``lnl/losses.py:ANormLoss``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> logits = jnp.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    >>> losses = rl.asymmetric_norm_loss(logits, jnp.array([0, 0]))
    >>> print([round(float(x), 4) for x in losses])  # p_y = 0.96, then p_y = 0.02
    [0.0965, 2.0931]
  """
  _check_anorm(a, p)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_anorm(logits, labels, a, p), where)


NCE_PASSIVE = ("agce", "aul", "ael", "anorm")


def nce_asymmetric_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  passive: str = "agce",
  alpha: float = 1.0,
  beta: float = 4.0,
  a: float = 6.0,
  q: float = 1.5,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""NCE plus an asymmetric loss: :math:`\alpha\,\mathrm{NCE} + \beta \cdot \{\mathrm{AGCE},
  \mathrm{AUL}, \mathrm{AEL}, \mathrm{ANorm}\}` (the published NCE+AGCE / NCE+AUL / NCE+AEL; Zhou et al., 2021).

  ``passive`` picks the asymmetric term ('agce', 'aul', 'ael', 'anorm'; ``q`` is unused by 'ael' and is
  ANorm's exponent :math:`p` for 'anorm', see :func:`asymmetric_norm_loss`). NCE is
  :func:`symmetric.normalized_cross_entropy`. Official configs (``lnl/config.py``):

  * NCE+AGCE: CIFAR-10 :math:`\alpha=1, \beta=4, a=6, q=1.5` (the defaults); CIFAR-100
    :math:`\alpha=10, \beta=0.1, a=1.8, q=3`; MNIST :math:`\alpha=0, \beta=1, a=4, q=0.2`.
  * NCE+AUL: CIFAR-10 :math:`\alpha=1, \beta=4, a=6.3, q=1.5`; CIFAR-100 :math:`\alpha=10,
    \beta=0.015, a=6, q=3`; MNIST :math:`\alpha=0, \beta=1, a=3, q=0.1`.
  * NCE+AEL: CIFAR-10 :math:`\alpha=1, \beta=4, a=5`; CIFAR-100 :math:`\alpha=10, \beta=0.1,
    a=1.5`; MNIST :math:`\alpha=0, \beta=1, a=3.5`.
  * NCE+ANorm (official ``NCEandANL``; no dataset config uses it): class defaults :math:`\alpha=1,
    \beta=1, a=2, p=0.7` (pass ``q=0.7``).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    passive: 'agce', 'aul', 'ael' or 'anorm'.
    alpha: weight of NCE, >= 0.
    beta: weight of the asymmetric loss, >= 0.
    a: parameter of the asymmetric loss (> 0; > 1 for 'aul' and 'anorm').
    q: exponent of 'agce'/'aul'/'anorm', > 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhou et al., `Asymmetric Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2106.03110>`_, ICML 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.nce_asymmetric_loss(logits, labels, passive="agce", alpha=1.0, beta=4.0, a=6.0, q=1.5))
    [1.5818 3.9764 9.0413]
  """
  _utils.check_choice("passive", passive, NCE_PASSIVE)
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  if passive == "agce":
    _check_agce(a, q)
    terms = lambda lp: _agce_terms(lp, a, q)
  elif passive == "aul":
    _check_aul(a, q)
    terms = lambda lp: _aul_terms(lp, a, q)
  elif passive == "ael":
    _utils.check_range("a", a, 0.0, lo_open=True)
    terms = lambda lp: _ael_terms(lp, a)
  else:
    _check_anorm(a, q)
  logits, labels, where = _utils.prepare(logits, labels, where)
  nce = symmetric._nce(logits, labels)
  passive_loss = _anorm(logits, labels, a, q) if passive == "anorm" else _utils.label_sum(logits, labels, terms)
  return _utils.mask(alpha * nce + beta * passive_loss, where)


def _amse(logits, labels, a):
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.sum(jnp.square(probs - a * _utils.one_hot(logits, labels)), axis=-1) / num_classes


def asymmetric_mean_squared_error(
  logits: ArrayLike, labels: ArrayLike, *, a: float = 30.0, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Asymmetric mean squared error :math:`\frac1K \sum_k (p_k - a\,y_k)^2` (AMSE; Wang et al., 2025).

  MSE against the label scaled by :math:`a \ge 1`, which makes it asymmetric (noise tolerant) while
  keeping a passive part that pushes the other :math:`p_k` down. Gradient w.r.t. :math:`p`:
  :math:`\frac2K (p - a y)`, i.e. a push on :math:`p_y` of about :math:`2a/K` whatever the confidence.

  **Scale:** the official ``AMSELoss`` returns the mean over all B·K entries; the per-example value here
  carries the 1/K, so the batch *mean* of these per-example losses equals the official loss. Defaults
  a = 30 (CIFAR-10); CIFAR-100 uses a = 20 (the values of JAL-CE).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    a: label scale, >= 1.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wang et al., `Joint Asymmetric Loss for Learning with Noisy Labels
    <https://arxiv.org/abs/2507.17692>`_, ICCV 2025; code ``cswjl/joint-asymmetric-loss``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.asymmetric_mean_squared_error(logits, labels, a=5.0))  # a = 5: Clothing1M's JAL
    [4.3052 4.7956 6.0525]
  """
  _utils.check_range("a", a, 1.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_amse(logits, labels, a), where)


def joint_asymmetric_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  active: str = "nce",
  alpha: float = 1.0,
  beta: float = 1.0,
  a: float = 30.0,
  gamma: float = 0.5,
  detach_modulator: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Joint asymmetric loss :math:`\alpha \cdot \mathrm{active} + \beta\,\mathrm{AMSE}` (JAL; Wang et
  al., ICCV 2025).

  JAL-CE (``active='nce'``): NCE + AMSE; JAL-FL (``active='nfl'``): NFL + AMSE (``gamma``,
  ``detach_modulator`` as in :func:`symmetric.normalized_focal_loss`; the official code detaches the
  modulator). AMSE is :func:`asymmetric_mean_squared_error` (1/K per example, so batch means equal the
  official loss). Official configs: CIFAR-10 :math:`\alpha = 1, \beta = 1, a = 30` (default); CIFAR-100
  :math:`\alpha = 5, \beta = 1, a = 20`; WebVision :math:`\alpha = 50, \beta = 1, a = 30`; Clothing1M
  :math:`\alpha = 5, \beta = 0.1, a = 5`.

  The official training adds an L1 penalty on the parameters instead of L2 weight decay for AMSE
  (5e-5 on CIFAR-10, 5e-6 on CIFAR-100), outside the loss: an optimizer option, not part of this loss.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    active: 'nce' or 'nfl'.
    alpha: weight of the active loss, >= 0.
    beta: weight of AMSE, >= 0.
    a: AMSE label scale, >= 1.
    gamma: focal parameter of 'nfl', >= 0.
    detach_modulator: no gradient through the focal modulator (official convention).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wang et al., `Joint Asymmetric Loss for Learning with Noisy Labels
    <https://arxiv.org/abs/2507.17692>`_, ICCV 2025.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.joint_asymmetric_loss(logits, labels, active="nce", alpha=5.0, beta=0.1, a=5.0))  # Clothing1M
    [0.5131 0.8255 1.7664]
  """
  _utils.check_choice("active", active, negative.ANL_ACTIVE)
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  _utils.check_range("a", a, 1.0)
  _utils.check_range("gamma", gamma, 0.0)
  _utils.check_bool("detach_modulator", detach_modulator)
  logits, labels, where = _utils.prepare(logits, labels, where)
  loss = alpha * negative.active_term(active, logits, labels, gamma, detach_modulator) + beta * _amse(logits, labels, a)
  return _utils.mask(loss, where)
