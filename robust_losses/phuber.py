r"""Partially Huberised cross entropy and generalized cross entropy (Menon et al., ICLR 2020)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, generalized


def _phuber_terms(log_probs, tau):
  linear = -tau * jnp.exp(log_probs) + jnp.log(tau) + 1.0
  return jnp.where(log_probs <= -jnp.log(tau), linear, -log_probs)


def partially_huberised_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, tau: float = 2.0, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Partially Huberised CE (PHuber-CE; Menon et al., ICLR 2020).

  .. math:: \ell(p_y) = \begin{cases} -\tau p_y + \log\tau + 1 & p_y \le 1/\tau \\
     -\log p_y & \text{otherwise.} \end{cases}

  CE with its :math:`-\log` replaced below :math:`p_y = 1/\tau` by its tangent line there (C¹ in
  :math:`p_y`): the gradient w.r.t. :math:`p_y` is capped at :math:`\tau`, which is per-example gradient
  clipping done at the loss level and makes the loss robust to label noise (unlike clipping the batch
  gradient norm). Defaults :math:`\tau = 2` (CIFAR-10); CIFAR-100 uses 10 or 50, MNIST 10. Soft labels
  use the label-weighted sum of the per-class terms. :math:`\tau \to 1^+` approaches :math:`2 - p_y`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    tau: gradient bound, > 1.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, log(tau) + 1].

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020 (no official code; checked against the
    ReScience reproduction ``dmizr/phuber``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.partially_huberised_cross_entropy(logits, labels, tau=2.0))
    [0.161  0.4688 1.4118]
  """
  _utils.check_range("tau", tau, 1.0, lo_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: _phuber_terms(lp, tau)), where)


def _phuber_gce_terms(log_probs, q, tau):
  # GCE's slope in p is -p^(q - 1); it reaches -tau at p* = tau^(1 / (q - 1)), below which the loss is
  # continued by its tangent line there: -tau p + tau p* + (1 - p*^q) / q.
  log_threshold = jnp.log(tau) / (q - 1.0)
  boundary = tau * jnp.exp(log_threshold) + generalized.lq_terms(log_threshold, q)
  linear = -tau * jnp.exp(log_probs) + boundary
  return jnp.where(log_probs <= log_threshold, linear, generalized.lq_terms(log_probs, q))


def partially_huberised_generalized_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, q: float = 0.7, tau: float = 10.0, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Partially Huberised generalized cross entropy (PHuber-GCE; Menon et al., ICLR 2020).

  .. math:: \ell(p_y) = \begin{cases} -\tau p_y + \tau p^* + \frac{1 - (p^*)^q}{q} & p_y \le p^* \\
     \frac{1 - p_y^q}{q} & \text{otherwise,} \end{cases} \qquad p^* = \tau^{1/(q - 1)}.

  GCE (:func:`~robust_losses.generalized_cross_entropy`) with its curve replaced below :math:`p^*` by its
  tangent line there, :math:`p^*` being where GCE's slope :math:`-p_y^{q-1}` reaches :math:`-\tau`: the
  loss is C¹ in :math:`p_y` and the gradient w.r.t. :math:`p_y` is capped at :math:`\tau` (per-example
  gradient clipping done at the loss level, as in
  :func:`partially_huberised_cross_entropy`). For q = 0.7, τ = 10 the linear part starts at
  :math:`p^* = 10^{-1/0.3} \approx 4.6\cdot10^{-4}`, so only confidently contradicted labels are affected.
  Soft labels use the label-weighted sum of the per-class terms.

  Defaults q = 0.7, τ = 10: ``conf/loss/phuber_gce.yaml`` of the reproduction, used for MNIST, CIFAR-10
  and CIFAR-100 alike in its README tables. As in that code there is no epsilon on :math:`p_y`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    q: GCE exponent, in (0, 1).
    tau: gradient bound, > 1.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, tau p* + (1 - p*^q) / q].

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020 (no official code; checked against the
    ReScience reproduction ``dmizr/phuber``, ``phuber/loss.py:PHuberGeneralizedCrossEntropy``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [-9.0, 0.0, 9.0]])
    >>> losses = rl.partially_huberised_generalized_cross_entropy(logits, jnp.array([0, 0]))
    >>> print([round(float(x), 4) for x in losses])  # p_y = 0.84, GCE part; p_y = 1.5e-8 < p*, linear part
    [0.1601, 1.4266]
  """
  _utils.check_range("q", q, 0.0, 1.0, lo_open=True, hi_open=True)
  _utils.check_range("tau", tau, 1.0, lo_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: _phuber_gce_terms(lp, q, tau)), where)
