r"""Logit clipping (LogitClip; Wei et al., ICML 2023): CE on logits whose L2 norm is clipped."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils

_NORM_EPS = 1e-7  # added to the norm, as the official code


def clip_logits(logits: ArrayLike, tau: float, official_threshold: bool = False) -> jax.Array:
  r"""Logits with L2 norm clipped: rows with :math:`\|z\| + \epsilon >` threshold become
  :math:`z / (\|z\| + \epsilon) \cdot (1/\tau)`; the threshold is :math:`1/\tau` (paper, continuous) or
  :math:`\tau` (``official_threshold``). The gradient flows through the norm.

  References:
    Wei et al., `Mitigating Memorization of Noisy Labels by Clipping the Model Prediction
    <https://arxiv.org/abs/2212.04055>`_, ICML 2023.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> clipped = rl.clip_logits(logits, tau=0.5)  # rows with norm > 1/tau rescaled to norm 1/tau
    >>> print(jnp.linalg.norm(logits, axis=-1))
    [3.2265 1.5588 2.8879]
    >>> print(jnp.linalg.norm(clipped, axis=-1))
    [2.     1.5588 2.    ]
  """
  squares = jnp.sum(jnp.square(logits), axis=-1, keepdims=True)
  # sqrt has an infinite derivative at 0 (an all-zero row, e.g. a masked one): floor its argument.
  norm = jnp.sqrt(jnp.maximum(squares, jnp.finfo(logits.dtype).tiny)) + _NORM_EPS
  bound = 1.0 / tau
  threshold = tau if official_threshold else bound
  return jnp.where(norm > threshold, logits / norm * bound, logits)


def logit_clipping(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  tau: float = 1.0,
  official_threshold: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Cross entropy on norm-clipped logits (LogitClip; Wei et al., ICML 2023).

  .. math:: \mathrm{CE}(\mathrm{clip}(z), y),\quad \mathrm{clip}(z) = \begin{cases} z &
     \|z\|_2 \le 1/\tau \\ z / \|z\|_2 \cdot 1/\tau & \text{otherwise.} \end{cases}

  Bounding the logit norm by :math:`1/\tau` bounds CE (by :math:`\log(1 + (K-1) e^{2/\tau})`), so a
  mislabelled sample cannot be memorised by growing the logits: this is the paper's method and the
  **default**. Gradient: CE's gradient for unclipped rows; for clipped rows its projection orthogonal
  to z (scaled by :math:`1/(\tau \|z\|)`), so only the direction of z is trained.

  **Official convention** (``official_threshold=True``): ``hongxin001/LogitClip`` clips when
  :math:`\|z\| + 10^{-7} > \tau` but rescales to norm :math:`1/\tau`; the two coincide only at
  :math:`\tau = 1` and the loss jumps at :math:`\|z\| = \tau` otherwise (for :math:`\tau = 1.5`, by
  about 0.06 right at the threshold). The paper's continuous form is the default because the jump is
  an inconsistency of the code, not part of the method; the flag reproduces the code's numbers (JAL's
  ``CEandLC(δ)`` is the same with :math:`\tau = 1/\delta`). Both add :math:`10^{-7}` to the norm.

  Defaults: :math:`\tau = 1` (the code's default, where both conventions agree); the README example uses
  1.5 (official threshold). The ε-softmax paper's CEandLC δ (rescaled norm δ, i.e. :math:`\tau = 1/\delta`):
  1 for CIFAR-10 clean and symmetric 20-40%, 1.5 for 60-80%, 2.5 asymmetric, 0.5 for CIFAR-100.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    tau: temperature, > 0: the clipped logit norm is :math:`1/\tau`.
    official_threshold: clip at norm :math:`\tau` instead of :math:`1/\tau` (the official code).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wei et al., `Mitigating Memorization of Noisy Labels by Clipping the Model Prediction
    <https://arxiv.org/abs/2212.04055>`_, ICML 2023.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.logit_clipping(logits, labels, tau=1.0))
    [0.7871 0.7233 1.4219]
  """
  _utils.check_range("tau", tau, 0.0, lo_open=True)
  _utils.check_bool("official_threshold", official_threshold)
  logits, labels, where = _utils.prepare(logits, labels, where)
  clipped = clip_logits(logits, tau, official_threshold)
  return _utils.mask(_utils.cross_entropy(clipped, labels), where)
