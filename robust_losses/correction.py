r"""Loss correction with a known noise transition matrix (Patrini et al., CVPR 2017).

:math:`T_{ij} = P(\tilde{y} = j \mid y = i)`: row i is the distribution of the noisy label of a sample
whose true class is i, so every row sums to 1. Forward correction makes the model's clean posterior
explain the noisy labels through T; backward correction re-weights the loss by :math:`T^{-1}` so its
expectation under the noise equals the clean loss.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robust_losses import _utils

ROW_SUM_ATOL = 1e-5
MAX_CONDITION_NUMBER = 1e7


def check_transition_matrix(transition_matrix, *, num_classes: Optional[int] = None, invertible: bool = False) -> None:
  """Validates T: square K x K (matching `num_classes`), and when concrete: finite, >= 0, rows sum to 1.

  Raises:
    ValueError: naming the offending row/entry and the valid range.
  """
  shape = np.shape(transition_matrix)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(f"transition_matrix must be a square K x K matrix; got shape {shape}")
  if num_classes is not None and shape[0] != num_classes:
    raise ValueError(
      f"transition_matrix is {shape[0]} x {shape[1]} but the logits have "
      f"{num_classes} classes; it must be {num_classes} x {num_classes}"
    )
  if not _utils.is_concrete(transition_matrix):
    return
  t = np.asarray(transition_matrix, dtype=np.float64)
  bad = np.argwhere(~np.isfinite(t) | (t < 0))
  if bad.size:
    i, j = bad[0]
    raise ValueError(
      f"transition_matrix[{i}, {j}]={float(t[i, j])!r} is out of range; entries must be probabilities in [0, 1]"
    )
  sums = t.sum(axis=1)
  bad_rows = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_ATOL)
  if bad_rows.size:
    i = bad_rows[0]
    raise ValueError(
      f"transition_matrix row {i} sums to {float(sums[i])!r}; each row must sum to 1 within "
      f"{ROW_SUM_ATOL:g} (T[i, j] = P(noisy label j | true label i))"
    )
  if invertible:
    cond = np.linalg.cond(t)
    if not np.isfinite(cond) or cond > MAX_CONDITION_NUMBER:
      raise ValueError(
        f"transition_matrix is singular or ill-conditioned (condition number {cond:.3g}, "
        f"must be <= {MAX_CONDITION_NUMBER:g}); backward correction needs its inverse"
      )


def forward_corrected_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, transition_matrix: ArrayLike, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Forward-corrected CE :math:`-\sum_j y_j \log (p^\top T)_j` (Patrini et al., 2017).

  The model's softmax is read as the clean posterior :math:`p`; :math:`p^\top T` is then the implied
  distribution of the noisy label, and CE is taken against the (noisy) labels. The gradient trains the
  clean posterior while the noise is "explained away" by T. With T = I this is CE.

  Computed with one [..., K] x [K, K] matmul in a shifted probability space, O(BK + K²) memory:
  :math:`\log (p^\top T)_j = \max_i z_i - \mathrm{lse}(z) + \log \sum_i e^{z_i - \max z} T_{ij}`. The
  shifted probabilities are at most 1 with one equal to 1, so nothing overflows; the inner sum is floored
  at the smallest normal float, so a label that T makes possible only from classes the model gives
  essentially zero probability costs a large finite loss (~87 nats beyond the shift in float32) with zero
  gradient through the floor. A label on a class that T never produces (an all-zero column) gives an
  infinite loss.

  Args:
    logits: [..., K] unnormalised scores (of the clean class).
    labels: [...] integer class ids or [..., K] one-hot/soft noisy labels.
    transition_matrix: [K, K] row-stochastic, :math:`T_{ij} = P(\text{noisy } j \mid \text{true } i)`.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Patrini et al., `Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach
    <https://arxiv.org/abs/1609.03683>`_, CVPR 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> T = 0.8 * jnp.eye(4) + 0.2 / 3 * (1 - jnp.eye(4))  # 20% symmetric noise
    >>> print(rl.forward_corrected_cross_entropy(logits, labels, transition_matrix=T))
    [0.3697 0.6433 1.7729]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  check_transition_matrix(transition_matrix, num_classes=logits.shape[-1])
  t = _utils.as_float(transition_matrix).astype(logits.dtype)
  produced = jnp.any(t > 0, axis=0)  # columns (noisy classes) that T can produce at all
  top = jnp.max(logits, axis=-1, keepdims=True)
  shifted = jnp.exp(logits - jax.lax.stop_gradient(top))
  # log (p^T T)_j = log(e^{z - top} T)_j - log(sum e^{z - top}); the shift cancels exactly.
  log_norm = jnp.log(jnp.sum(shifted, axis=-1, keepdims=True))
  tiny = jnp.finfo(logits.dtype).tiny
  if _utils.is_ids(logits, labels):
    # Only column y of p^T T is needed: (e^{z - top} . T[:, y]), an O(BK) gather instead of the matmul.
    inner = jnp.maximum(jnp.sum(shifted * t.T[labels], axis=-1), tiny)
    log_noisy_y = jnp.log(inner) - log_norm[..., 0]
    loss = -jnp.where(produced[labels], log_noisy_y, -jnp.inf)
  else:
    inner = jnp.maximum(shifted @ t, tiny)
    log_noisy = jnp.where(produced, jnp.log(inner) - log_norm, -jnp.inf)
    loss = -jnp.sum(jnp.where(labels > 0, labels * log_noisy, 0.0), axis=-1)
  return _utils.mask(loss, where)


def backward_corrected_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, transition_matrix: ArrayLike, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Backward-corrected CE :math:`-\sum_k (y^\top T^{-1})_k \log p_k` (Patrini et al., 2017).

  The per-class CE vector is multiplied by :math:`T^{-1}`, which makes the loss an unbiased estimate of
  the clean-label CE under the noise model. :math:`T^{-1}` has negative entries, so the loss is not
  bounded below and individual values can be negative; in practice it is often unstable (Patrini et
  al. report forward correction working better). With T = I this is CE. The inverse is computed in
  float64 with NumPy when T is concrete.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft noisy labels.
    transition_matrix: [K, K] invertible row-stochastic matrix,
      :math:`T_{ij} = P(\text{noisy } j \mid \text{true } i)`.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Patrini et al., `Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach
    <https://arxiv.org/abs/1609.03683>`_, CVPR 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> T = 0.8 * jnp.eye(4) + 0.2 / 3 * (1 - jnp.eye(4))  # 20% symmetric noise
    >>> print(rl.backward_corrected_cross_entropy(logits, labels, transition_matrix=T))
    [-0.6663  0.0233  1.9067]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  check_transition_matrix(transition_matrix, num_classes=logits.shape[-1], invertible=True)
  if _utils.is_concrete(transition_matrix):
    t_inv = jnp.asarray(np.linalg.inv(np.asarray(transition_matrix, np.float64)), logits.dtype)
  else:
    t_inv = jnp.linalg.inv(_utils.as_float(transition_matrix)).astype(logits.dtype)
  # The rows of T^-1 for class ids (a gather), y^T T^-1 for soft labels.
  corrected = t_inv[labels] if _utils.is_ids(logits, labels) else labels @ t_inv
  loss = -jnp.sum(corrected * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return _utils.mask(loss, where)
