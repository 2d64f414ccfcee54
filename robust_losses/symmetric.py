r"""Symmetric and normalized losses: RCE, SCE (Wang et al., ICCV 2019) and APL (Ma et al., ICML 2020).

A loss is *symmetric* if :math:`\sum_j L(f(x), e_j)` is the same constant for every prediction; such
losses are provably robust to symmetric label noise (Ghosh et al., AAAI 2017) but underfit on their own.
Ma et al. make any loss symmetric by normalising it by that sum ("normalized" losses, bounded in [0, 1])
and pair a normalized *active* loss (one that only looks at the labelled class) with a robust *passive*
loss (one that also pushes down the other classes) to recover fitting ability: APL.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, classification, generalized


def _reverse_ce_terms(logits, labels, A):
  if _utils.is_ids(logits, labels):
    # -A sum_{k != y} p_k = A * expm1(log p_y), exact near p_y = 1.
    return A * jnp.expm1(_utils.label_log_prob(logits, labels))
  log_labels = jnp.log(jnp.where(labels > 0, labels, 1.0))
  # log 0 := A; labels below exp(A) are clamped the same way (cf. the authors' clip of labels at 1e-4).
  log_labels = jnp.where(labels > 0, jnp.maximum(log_labels, A), A)
  return -jnp.sum(jax.nn.softmax(logits, axis=-1) * log_labels, axis=-1)


def reverse_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, A: float = -4.0, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Reverse cross entropy :math:`-\sum_k p_k \log y_k`, with :math:`\log 0 := A`.

  CE with the roles of prediction and label swapped. For one-hot labels it equals
  :math:`-A (1 - p_y)`, i.e. :math:`-A/2` times MAE: symmetric, bounded, robust to noise, and with the
  small gradient :math:`-A p_y \nabla \mathrm{CE}` on samples the model contradicts. For soft labels,
  :math:`\log y_k` is clamped below at A (the authors' Keras code clamps labels at 1e-4, i.e.
  :math:`A \approx -9.21`). Default :math:`A = -4` (the paper's value).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    A: the value that replaces :math:`\log 0`, < 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, -A].

  References:
    Wang et al., `Symmetric Cross Entropy for Robust Learning with Noisy Labels
    <https://arxiv.org/abs/1908.06112>`_, ICCV 2019.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.reverse_cross_entropy(logits, labels, A=-4.0))  # -A (1 - p_y)
    [0.5948 1.497  3.4373]
  """
  _utils.check_range("A", A, hi=0.0, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_reverse_ce_terms(logits, labels, A), where)


def symmetric_cross_entropy(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  alpha: float = 0.1,
  beta: float = 1.0,
  A: float = -4.0,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Symmetric cross entropy :math:`\alpha \mathrm{CE} + \beta \mathrm{RCE}` (Wang et al., ICCV 2019).

  CE provides fast fitting (large gradients on hard samples), RCE robustness (bounded, symmetric).
  Defaults are the paper's CIFAR-10 setting :math:`\alpha = 0.1, \beta = 1, A = -4`; CIFAR-100 uses
  :math:`\alpha = 6, \beta = 0.1`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    alpha: weight of CE, >= 0.
    beta: weight of RCE, >= 0.
    A: :math:`\log 0` in RCE, < 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Wang et al., `Symmetric Cross Entropy for Robust Learning with Noisy Labels
    <https://arxiv.org/abs/1908.06112>`_, ICCV 2019.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.symmetric_cross_entropy(logits, labels, alpha=0.1, beta=1.0))
    [0.6109 1.5438 3.6334]
  """
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  _utils.check_range("A", A, hi=0.0, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  if _utils.is_ids(logits, labels):
    log_p_y = _utils.label_log_prob(logits, labels)  # both terms need only log p_y
    return _utils.mask(-alpha * log_p_y + beta * A * jnp.expm1(log_p_y), where)
  ce = _utils.cross_entropy(logits, labels)
  return _utils.mask(alpha * ce + beta * _reverse_ce_terms(logits, labels, A), where)


def _normalize(logits, labels, terms_fn, log_probs=None):
  """sum_k y_k t_k / sum_k t_k with t = terms_fn(log p): the loss at label y over its sum over all K
  one-hot labels."""
  if log_probs is None:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
  terms = terms_fn(log_probs)
  # The denominator is > 0 for K >= 2 (at most one class can have p = 1); the floor only guards K = 1.
  denominator = jnp.maximum(jnp.sum(terms, axis=-1), jnp.finfo(terms.dtype).tiny)
  if _utils.is_ids(logits, labels):
    numerator = _utils.at_label(terms, labels)
  else:
    numerator = jnp.sum(labels * terms, axis=-1)
  return numerator / denominator


def _nce_class_terms(log_p, p):
  """NCE's normaliser sum_k -log p_k: terms -log p_k (non-negative, no cancellation), derivative -1."""
  del p
  return -log_p, -1.0


def _normalized_ids(logits, labels, numerator, class_terms):
  """numerator(log p_y) / sum_k t_k for class ids: the fused single pass of
  `_utils.label_log_prob_and_sum` (the normaliser of the other K - 1 classes needs no second softmax)."""
  log_p_y, total = _utils.label_log_prob_and_sum(logits, labels, class_terms)
  # > 0 for K >= 2 (at most one class can have p = 1); the floor only guards K = 1.
  return numerator(log_p_y) / jnp.maximum(total, jnp.finfo(total.dtype).tiny), log_p_y


def _nce(logits, labels):
  """NCE = log p_y / sum_k log p_k; for class ids in one fused pass (`_normalized_ids`)."""
  if not _utils.is_ids(logits, labels):
    return _normalize(logits, labels, jnp.negative)
  return _normalized_ids(logits, labels, jnp.negative, _nce_class_terms)[0]


def normalized_cross_entropy(logits: ArrayLike, labels: ArrayLike, *, where: Optional[ArrayLike] = None) -> jax.Array:
  r"""Normalized cross entropy :math:`\mathrm{CE}(y) / \sum_j \mathrm{CE}(e_j)
  = \sum_k y_k \log p_k / \sum_j \log p_j` (Ma et al., ICML 2020).

  Bounded in [0, 1] and symmetric (robust to symmetric noise), but on its own it underfits: it is the
  active term of APL (e.g. NCE+RCE). Its gradient also pushes up :math:`\log p_j` for the other classes
  through the denominator.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1].

  References:
    Ma et al., `Normalized Loss Functions for Deep Learning with Noisy Labels
    <https://arxiv.org/abs/2006.13554>`_, ICML 2020.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.normalized_cross_entropy(logits, labels))  # in [0, 1]
    [0.0165 0.0692 0.2322]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_nce(logits, labels), where)


def normalized_focal_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  gamma: float = 0.5,
  detach_modulator: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Normalized focal loss :math:`\mathrm{FL}(y) / \sum_j \mathrm{FL}(e_j)` (Ma et al., ICML 2020).

  :math:`\mathrm{FL}(e_j) = -(1 - p_j)^\gamma \log p_j`. Bounded in [0, 1]; :math:`\gamma = 0` is NCE.
  Default :math:`\gamma = 0.5` (Ma et al.'s setting). By default the gradient is the exact gradient of
  the formula; ``detach_modulator=True`` treats every :math:`(1 - p)^\gamma` factor (numerator and
  normaliser) as a constant, as the APL reference code does with ``.data`` — same values, different
  gradients; use it to reproduce numbers from that codebase.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    gamma: focusing parameter, >= 0.
    detach_modulator: no gradient through :math:`(1 - p)^\gamma` (APL reference convention).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1].

  References:
    Ma et al., `Normalized Loss Functions for Deep Learning with Noisy Labels
    <https://arxiv.org/abs/2006.13554>`_, ICML 2020.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.normalized_focal_loss(logits, labels, gamma=0.5))
    [0.0066 0.0463 0.2265]
  """
  _utils.check_range("gamma", gamma, 0.0)
  _utils.check_bool("detach_modulator", detach_modulator)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_nfl(logits, labels, gamma, detach_modulator), where)


def normalized_generalized_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, q: float = 0.7, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Normalized GCE :math:`(1 - p_y^q) / \sum_j (1 - p_j^q)` (Ma et al., ICML 2020).

  For one-hot labels this is :math:`(1 - p_y^q) / (K - \sum_j p_j^q)`, as in the APL reference code;
  soft labels use the label-weighted numerator :math:`\sum_k y_k (1 - p_k^q)`. The :math:`1/q` of
  :math:`L_q` cancels, so the :math:`q \to 0` limit is well defined: q = 0 gives NCE exactly.
  Default :math:`q = 0.7`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    q: in [0, 1].
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1].

  References:
    Ma et al., `Normalized Loss Functions for Deep Learning with Noisy Labels
    <https://arxiv.org/abs/2006.13554>`_, ICML 2020.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.normalized_generalized_cross_entropy(logits, labels, q=0.7))
    [0.0387 0.1083 0.2779]
  """
  _utils.check_range("q", q, 0.0, 1.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_ngce(logits, labels, q), where)


def _nfl_parts(logits, labels, gamma, detach_modulator=False):
  """(NFL, log p_y) by the fused pass for class ids and a concrete gamma, else None."""
  if not (_utils.is_ids(logits, labels) and _utils.is_concrete(gamma)):
    return None
  return _normalized_ids(
    logits,
    labels,
    lambda lp: classification.focal_terms(lp, gamma, detach_modulator),
    classification.focal_class_terms(gamma, detach_modulator),
  )


def _nfl(logits, labels, gamma, detach_modulator=False):
  parts = _nfl_parts(logits, labels, gamma, detach_modulator)
  if parts is not None:
    return parts[0]
  return _normalize(logits, labels, lambda lp: classification.focal_terms(lp, gamma, detach_modulator))


def _ngce_parts(logits, labels, q):
  """(NGCE, log p_y) by the fused pass for class ids and a concrete q, else None."""
  if not (_utils.is_ids(logits, labels) and _utils.is_concrete(q)):
    return None
  return _normalized_ids(logits, labels, lambda lp: generalized.lq_terms(lp, q), generalized.lq_class_terms(q))


def _ngce(logits, labels, q):
  parts = _ngce_parts(logits, labels, q)
  if parts is not None:
    return parts[0]
  return _normalize(logits, labels, lambda lp: generalized.lq_terms(lp, q))


def _mae_terms(logits, labels):
  if _utils.is_ids(logits, labels):
    return -2.0 * jnp.expm1(_utils.label_log_prob(logits, labels))
  return jnp.sum(jnp.abs(labels - jax.nn.softmax(logits, axis=-1)), axis=-1)


def _apl_active(name, logits, labels, gamma, q):
  """(active loss, log p_y or None): with class ids, log p_y is returned for the passive term to reuse."""
  if _utils.is_ids(logits, labels):
    parts = {
      "nce": lambda: _normalized_ids(logits, labels, jnp.negative, _nce_class_terms),
      "nfl": lambda: _nfl_parts(logits, labels, gamma),
      "ngce": lambda: _ngce_parts(logits, labels, q),
    }.get(name, lambda: None)()
    if parts is not None:
      return parts
    if name in ("ce", "fl"):
      log_p_y = _utils.label_log_prob(logits, labels)
      return (-log_p_y if name == "ce" else classification.focal_terms(log_p_y, gamma)), log_p_y
  if name == "ce":
    return _utils.cross_entropy(logits, labels), None
  if name == "fl":
    return _utils.label_sum(logits, labels, lambda lp: classification.focal_terms(lp, gamma)), None
  if name == "nce":
    return _nce(logits, labels), None
  if name == "nfl":
    return _nfl(logits, labels, gamma), None
  return _ngce(logits, labels, q), None


def _apl_passive(name, logits, labels, A, log_p_y=None):
  num_classes = logits.shape[-1]
  if log_p_y is not None:  # class ids: RCE = A (p_y - 1), MAE = 2 (1 - p_y), both from log p_y
    rce = A * jnp.expm1(log_p_y)
    mae = -2.0 * jnp.expm1(log_p_y)
  else:
    rce = _reverse_ce_terms(logits, labels, A) if name in ("rce", "nrce") else None
    mae = _mae_terms(logits, labels) if name in ("mae", "nmae") else None
  if name == "rce":
    return rce
  if name == "nrce":
    # sum_j RCE(e_j) = -A (K - 1) for every prediction.
    return rce / (-A * max(num_classes - 1, 1))
  if name == "mae":
    return mae
  return mae / max(2 * num_classes - 2, 1)  # nmae: sum_j MAE(e_j) = 2K - 2


APL_ACTIVE = ("ce", "fl", "nce", "nfl", "ngce")
APL_PASSIVE = ("rce", "mae", "nrce", "nmae")


def active_passive_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  active: str = "nce",
  passive: str = "rce",
  alpha: float = 1.0,
  beta: float = 1.0,
  gamma: float = 0.5,
  q: float = 0.7,
  A: float = -4.0,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Active-passive loss :math:`\alpha \cdot \mathrm{active} + \beta \cdot \mathrm{passive}` (Ma et al.).

  Active losses only increase :math:`p_y`: 'ce', 'fl' (focal), and the normalized 'nce', 'nfl', 'ngce'.
  Passive losses also decrease :math:`p_j, j \ne y`: 'rce' (reverse CE), 'mae', and their normalized
  forms 'nrce' (:math:`\mathrm{RCE} / (-A (K-1))`) and 'nmae' (:math:`\mathrm{MAE} / (2K - 2)`). The
  paper's robust combinations pair a normalized active loss with a passive one: NCE+RCE (the default),
  NCE+MAE, NFL+RCE, NFL+MAE; NGCE+MAE/RCE come from the authors' code. Weights: CIFAR-10
  :math:`\alpha = \beta = 1`; CIFAR-100 :math:`\alpha = 10, \beta = 0.1`; MNIST :math:`\alpha = 1,
  \beta = 10`. ``gamma`` is used by 'fl'/'nfl', ``q`` by 'ngce', ``A`` by 'rce'/'nrce'.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    active: one of 'ce', 'fl', 'nce', 'nfl', 'ngce'.
    passive: one of 'rce', 'mae', 'nrce', 'nmae'.
    alpha: weight of the active loss, >= 0.
    beta: weight of the passive loss, >= 0.
    gamma: focal parameter, >= 0.
    q: NGCE parameter, in [0, 1].
    A: :math:`\log 0` in RCE, < 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Ma et al., `Normalized Loss Functions for Deep Learning with Noisy Labels
    <https://arxiv.org/abs/2006.13554>`_, ICML 2020.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.active_passive_loss(logits, labels, active="nce", passive="rce", alpha=1.0, beta=1.0))
    [0.6113 1.5662 3.6695]
  """
  _utils.check_choice("active", active, APL_ACTIVE)
  _utils.check_choice("passive", passive, APL_PASSIVE)
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  _utils.check_range("gamma", gamma, 0.0)
  _utils.check_range("q", q, 0.0, 1.0)
  _utils.check_range("A", A, hi=0.0, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  active_loss, log_p_y = _apl_active(active, logits, labels, gamma, q)
  loss = alpha * active_loss + beta * _apl_passive(passive, logits, labels, A, log_p_y)
  return _utils.mask(loss, where)
