r"""Tamed cross entropy (Martinez & Stiefelhagen, GCPR 2018).

TCE applies a concave transform to the cross entropy :math:`u = \mathrm{CE}`:

.. math:: \mathrm{TCE}_\alpha(u) = \frac{(1 + u)^{1 - \alpha} - 1}{1 - \alpha}, \qquad
          \mathrm{TCE}_1(u) = \log(1 + u),

so :math:`\nabla \mathrm{TCE}_\alpha = (1 + u)^{-\alpha} \nabla \mathrm{CE}`. Confidently-right samples
(u ~ 0) get the CE gradient; samples the model strongly disagrees with — typically mislabelled ones —
get a vanishing one. :math:`\alpha = 0` is exactly CE. The paper's printed loss (its eq. 9) differs from
the form above only by an additive constant that is singular at :math:`\alpha = 1`; the form above is
continuous in :math:`\alpha` and has the same gradients.

ICCE is not implemented
-----------------------
The "improved cross entropy" ICCE of Li et al. (PRCV 2021), described as adjusting "the weighting scheme
based on the predicted probability distribution by an exponential item", is deliberately NOT implemented:
its formula could not be obtained from any reachable source, and we do not ship a guess under its name.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils


def tamed_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, alpha: float = 1.5, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Tamed cross entropy :math:`((1 + \mathrm{CE})^{1-\alpha} - 1) / (1 - \alpha)`.

  Gradient: :math:`(1 + \mathrm{CE})^{-\alpha} \nabla \mathrm{CE}`, i.e. per example
  :math:`\partial L / \partial \log p_y = -(1 - \log p_y)^{-\alpha}`: like CE when the label is predicted
  confidently, vanishing as the model contradicts the label. :math:`\alpha = 0` returns CE exactly,
  :math:`\alpha = 1` is :math:`\log(1 + \mathrm{CE})`; for :math:`\alpha > 1` the loss is bounded by
  :math:`1 / (\alpha - 1)`. Computed stably as ``expm1((1 - alpha) * log1p(CE)) / (1 - alpha)``.

  Default :math:`\alpha = 1.5` (the paper's best trade-off; useful range :math:`0 < \alpha \le 2`).
  ``alpha`` may be a traced value; the special cases 0 and 1 are then selected with ``jnp.where``.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels (CE is computed with them, then
      transformed).
    alpha: taming strength, >= 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Martinez & Stiefelhagen, `Taming the Cross Entropy Loss
    <https://arxiv.org/abs/1810.05075>`_, GCPR 2018.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.tamed_cross_entropy(logits, labels, alpha=1.5))
    [0.1438 0.3497 0.8378]
    >>> print(rl.tamed_cross_entropy(logits, labels, alpha=0.0))  # alpha = 0 is softmax CE
    [0.161  0.4688 1.9612]
  """
  _utils.check_range("alpha", alpha, 0.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  ce = _utils.cross_entropy(logits, labels)

  def general():
    one_minus_alpha = 1.0 - alpha
    # The denominator is made nonzero so the unselected branch (alpha == 1) stays finite when traced.
    return jnp.expm1(one_minus_alpha * jnp.log1p(ce)) / _utils.safe_nonzero(one_minus_alpha)

  loss = _utils.select(alpha == 0, lambda: ce, lambda: _utils.select(alpha == 1, lambda: jnp.log1p(ce), general))
  return _utils.mask(loss, where)
