r"""Generalized cross entropy (Lq) and its truncated variant (Zhang & Sabuncu, NeurIPS 2018).

:math:`L_q(p) = (1 - p^q) / q` interpolates between CE (:math:`q \to 0`) and MAE/2 (:math:`q = 1`):
its gradient is :math:`p_y^q \nabla \mathrm{CE}`, so low-confidence (likely mislabelled) samples are
down-weighted by :math:`p_y^q`. The truncated loss additionally caps the loss of samples with
:math:`p_y \le k` at the constant :math:`L_q(k)`, removing their gradient altogether.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robust_losses import _utils, protocol


def lq_terms(log_probs, q) -> jax.Array:
  r"""Elementwise :math:`(1 - p^q) / q` from log-probabilities; :math:`-\log p` at q = 0.

  ``-expm1(q log p) / q`` is exact for small q and small 1 - p, where ``1 - p**q`` cancels.
  """

  def general():
    return -jnp.expm1(q * log_probs) / _utils.safe_nonzero(q)

  return _utils.select(q == 0, lambda: -log_probs, general)


def lq_class_terms(q):
  r"""`lq_terms` for every class at once, as ``class_terms`` of `_utils.label_log_prob_and_sum`:
  ``(log_p, p) -> (t, dt/dlog p)`` for a concrete ``q``; :math:`dt/d\log p = -p^q`.

  For :math:`q \ge 1/4` the terms are :math:`(1 - p^q)/q` with :math:`p^q = \exp(q \log p)`: expm1 costs
  ~4 exps per element on XLA:CPU, and ``1 - p**q`` only cancels for the largest class when p is near 1,
  whose term is then negligible in the sum (every other class has :math:`p \le 1/2`, so
  :math:`1 - p^q \ge 1 - 2^{-1/4}`: a few ulps at most). Smaller q keeps ``expm1``.
  """
  if q == 0:
    return lambda log_p, p: (-log_p, -1.0)
  if q == 1:
    return lambda log_p, p: (1.0 - p, -p)
  if q >= 0.25:

    def terms(log_p, p):
      del p
      p_q = jnp.exp(q * log_p)
      return (1.0 - p_q) / q, -p_q

    return terms

  def small_q_terms(log_p, p):
    del p
    expm1 = jnp.expm1(q * log_p)
    return -expm1 / q, -(1.0 + expm1)

  return small_q_terms


def generalized_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, q: float = 0.7, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Generalized cross entropy :math:`L_q = \sum_k y_k (1 - p_k^q) / q` (= :math:`(1 - p_y^q)/q`).

  Gradient: :math:`p_y^q \nabla \mathrm{CE}` for one-hot labels — CE's gradient weighted by the model's
  confidence in the label, so samples it disagrees with count less. :math:`q = 0` is exactly CE,
  :math:`q = 1` is :math:`1 - p_y` (MAE / 2). Soft labels use the label-weighted sum of the
  per-class terms. Default :math:`q = 0.7` (the paper's choice).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    q: in [0, 1].
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1/q].

  References:
    Zhang & Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels
    <https://arxiv.org/abs/1805.07836>`_, NeurIPS 2018.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.generalized_cross_entropy(logits, labels, q=0.7))  # at most 1/q
    [0.1523 0.3996 1.0666]
  """
  _utils.check_range("q", q, 0.0, 1.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.label_sum(logits, labels, lambda lp: lq_terms(lp, q)), where)


def _label_probability(logits, labels) -> jax.Array:
  """p_y = sum_k y_k p_k: the probability of the label (label-weighted for soft labels)."""
  if _utils.is_ids(logits, labels):
    return jnp.exp(_utils.label_log_prob(logits, labels))
  return jnp.sum(labels * jax.nn.softmax(logits, axis=-1), axis=-1)


def truncated_generalized_cross_entropy(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  q: float = 0.7,
  k: float = 0.5,
  weights: Optional[ArrayLike] = None,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Truncated Lq loss: :math:`L_q(p_y)` if :math:`p_y > k`, else the constant :math:`L_q(k)`.

  With per-example ``weights`` :math:`w \in [0, 1]` it is :math:`w L_q(p_y) + (1 - w) L_q(k)`, the
  objective of the paper's alternating convex search: the weights :math:`w = 1[p_y > k]` are recomputed
  only every few epochs (see :func:`truncated_lq_prune_weights`) and held fixed in between. Without
  ``weights`` the truncation is applied on the fly with the current :math:`p_y`.

  Gradient: :math:`p_y^q \nabla \mathrm{CE}` for kept samples, zero for truncated ones (they contribute
  the constant :math:`L_q(k)`). Defaults :math:`q = 0.7`, :math:`k = 0.5`.

  For soft labels the Lq term is the label-weighted sum of :func:`generalized_cross_entropy` and the
  truncation test uses :math:`p_y = \sum_k y_k p_k`; both reduce to the paper's loss for one-hot labels.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    q: in [0, 1].
    k: truncation threshold on :math:`p_y`, in (0, 1).
    weights: optional [...] per-example weights (no gradient flows into them).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhang & Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels
    <https://arxiv.org/abs/1805.07836>`_, NeurIPS 2018.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.truncated_generalized_cross_entropy(logits, labels, q=0.7, k=0.5))  # p_y <= k: L_q(k)
    [0.1523 0.3996 0.5492]
  """
  _utils.check_range("q", q, 0.0, 1.0)
  _utils.check_range("k", k, 0.0, 1.0, lo_open=True, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  lq = _utils.label_sum(logits, labels, lambda lp: lq_terms(lp, q))
  lq_k = lq_terms(jnp.log(jnp.asarray(k, lq.dtype)), q)
  if weights is None:
    keep = _label_probability(logits, labels) > k
    loss = jnp.where(keep, lq, lq_k)
  else:
    w = jax.lax.stop_gradient(jnp.broadcast_to(_utils.as_float(weights), lq.shape))
    loss = w * lq + (1.0 - w) * lq_k
  return _utils.mask(loss, where)


def truncated_lq_prune_weights(
  logits: ArrayLike, labels: ArrayLike, *, q: float = 0.7, k: float = 0.5, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Pruning weights of the truncated Lq loss: :math:`w = 1[p_y > k]` (float32, no gradient).

  This is the weight step of the alternating convex search: for fixed model parameters,
  :math:`w L_q(p_y) + (1 - w) L_q(k)` is minimised by keeping (w = 1) exactly the samples with
  :math:`L_q(p_y) < L_q(k)`, i.e. :math:`p_y > k` since :math:`L_q` is decreasing. The rule therefore
  does not depend on ``q``; it is accepted so that a loss's ``hparams`` can be passed unchanged. The
  paper's reference code recomputes the weights every 10 epochs from a start epoch.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    q: in [0, 1] (validated, otherwise unused).
    k: threshold in (0, 1).
    where: optional bool [...]; False examples get weight 0.

  Returns:
    Weights [...] (float32, 0 or 1).

  References:
    Zhang & Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels
    <https://arxiv.org/abs/1805.07836>`_, NeurIPS 2018.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> weights = rl.truncated_lq_prune_weights(logits, labels, k=0.5)
    >>> print(weights)
    [1. 1. 0.]
    >>> print(rl.truncated_generalized_cross_entropy(logits, labels, k=0.5, weights=weights))
    [0.1523 0.3996 0.5492]
  """
  _utils.check_range("q", q, 0.0, 1.0)
  _utils.check_range("k", k, 0.0, 1.0, lo_open=True, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  keep = _label_probability(jax.lax.stop_gradient(logits), labels) > k
  return _utils.mask(keep.astype(jnp.float32), where)


# --- truncated Lq's training protocol (see `protocol.Training`): the weight step of the alternating convex
# search, w = 1[p_y > k] recomputed from the model every `prune_every_epochs` epochs from `prune_start_epoch`.

TRUNCATED_LQ_SCHEDULE = {"prune_start_epoch": 40, "prune_every_epochs": 10}  # the paper's reference code


def truncated_lq_init(num_classes: int) -> dict[str, np.ndarray]:
  """Initial per-example state of truncated Lq: weight 1 (every example kept until the first pruning)."""
  del num_classes
  return {"weights": np.float32(1.0)}


def truncated_lq_refresh(logits, labels, hparams: Mapping[str, Any]) -> dict[str, jax.Array]:
  """New weights of every example from eval-mode logits: `truncated_lq_prune_weights` with the loss's q, k."""
  return {"weights": truncated_lq_prune_weights(logits, labels, q=hparams["q"], k=hparams["k"])}


def truncated_lq_refresh_due(epoch: int, hparams: Mapping[str, Any]) -> bool:
  """Whether the weights are recomputed at the start of `epoch` (0-based)."""
  start, every = hparams["prune_start_epoch"], hparams["prune_every_epochs"]
  return epoch >= start and (epoch - start) % every == 0


def truncated_lq_check(hparams: Mapping[str, Any], num_epochs: int) -> None:
  """Raises ValueError if the first pruning falls outside the run (the run would train plain Lq)."""
  protocol.check_schedule_epoch(
    "prune_start_epoch",
    hparams["prune_start_epoch"],
    num_epochs,
    "the weights are never computed and the run trains plain Lq",
  )


TRAINING = {
  "truncated_generalized_cross_entropy": protocol.Training(
    example_state=truncated_lq_init,
    refresh=truncated_lq_refresh,
    refresh_due=truncated_lq_refresh_due,
    extra_hparams=TRUNCATED_LQ_SCHEDULE,
    check=truncated_lq_check,
  )
}
