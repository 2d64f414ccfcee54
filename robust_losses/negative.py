r"""Normalized negative losses and Active Negative Loss (ANL; Ye et al., NeurIPS 2023).

APL (`symmetric.active_passive_loss`) pairs a normalized active loss with a passive one (MAE/RCE) that
only pushes down the other classes. ANL replaces the passive loss by a *normalized negative* loss: with
a loss clamped to :math:`[0, A]` (p clamped at ``min_prob``, :math:`A = -\log \text{min\_prob}`), the
"negative" loss :math:`A - L(e_k)` is large where :math:`p_k` is large, and normalising it over the K
labels gives a symmetric (noise-robust) loss whose gradient concentrates on well-fitted (clean) samples
instead of MAE's uniform weighting.

The official code adds an L1 penalty :math:`\delta \sum_\theta |\theta|` of *all* model parameters to the
returned loss (and trains with weight decay 0): that is a property of the optimizer, not of the
per-example loss, and is not included here (use an L1 optimizer option).
"""

from __future__ import annotations

import math
from typing import Hashable, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, classification, symmetric


def _check_min_prob(min_prob):
  _utils.check_range("min_prob", min_prob, 0.0, 1.0, lo_open=True, hi_open=True)


def _log_min_prob(min_prob):
  # log of the float32 min_prob, computed in float32 as the official `torch.tensor(min_prob).log()`.
  return jnp.log(jnp.asarray(min_prob, jnp.float32))


def nnce_terms(log_probs, min_prob):
  """Elementwise ``A + max(log p, log min_prob)`` = :math:`A - \\mathrm{CE}(e_k)` clamped to [0, A]."""
  log_mp = _log_min_prob(min_prob)
  return jnp.maximum(log_probs, log_mp) - log_mp


def _nnce(logits, labels, min_prob):
  return 1.0 - symmetric._normalize(logits, labels, lambda lp: nnce_terms(lp, min_prob))


def _nnfl(logits, labels, gamma, min_prob, detach_modulator):
  log_mp = _log_min_prob(min_prob)
  # A = -(1 - min_prob)^gamma log(min_prob): the focal loss at p = min_prob, its maximum after the clamp.
  big_a = -jnp.power(1.0 - jnp.asarray(min_prob, jnp.float32), gamma) * log_mp
  # (A - FL(e_k)) / sum_j (A - FL(e_j)), with FL on log p clamped at log(min_prob) (zero gradient below).
  terms = lambda lp: big_a - classification.focal_terms(jnp.maximum(lp, log_mp), gamma, detach_modulator)
  return 1.0 - symmetric._normalize(logits, labels, terms)


def normalized_negative_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, min_prob: float = 1e-7, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Normalized negative cross entropy (NNCE; Ye et al., NeurIPS 2023).

  .. math:: \mathrm{NNCE} = 1 - \frac{A + \log p_y}{\sum_k (A + \log p_k)}, \quad
     p_k \leftarrow \max(p_k, \text{min\_prob}),\; A = -\log \text{min\_prob}.

  Each :math:`A + \log p_k = A - \mathrm{CE}(e_k) \in [0, A]` is the "negative" CE of label k; the loss
  is in [0, 1] and symmetric. Gradient: it raises :math:`p_y` (and lowers the others) with a weight that
  grows with :math:`\log p_y` relative to the other classes, so confidently fitted samples dominate
  and contradicted (likely noisy) ones get little gradient; classes below ``min_prob`` get none.
  Default ``min_prob = 1e-7`` (every ANL config; JAL's vendored copy uses 1e-8). As in the official code,
  A is computed from the float32 ``min_prob``. Soft labels use the label-weighted numerator.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    min_prob: probability floor, in (0, 1).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1].

  References:
    Ye et al., `Active Negative Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2312.02857>`_, NeurIPS 2023; code ``Virusdoll/Active-Negative-Loss``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.normalized_negative_cross_entropy(logits, labels))
    [0.7084 0.7288 0.7473]
  """
  _check_min_prob(min_prob)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_nnce(logits, labels, min_prob), where)


def normalized_negative_focal_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  gamma: float = 0.5,
  min_prob: float = 1e-7,
  detach_modulator: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Normalized negative focal loss (NNFL; Ye et al., NeurIPS 2023).

  .. math:: \mathrm{NNFL} = 1 - \frac{A - \mathrm{FL}(e_y)}{K A - \sum_k \mathrm{FL}(e_k)}, \quad
     \mathrm{FL}(e_k) = -(1 - p_k)^\gamma \log p_k,\; A = -(1 - \text{min\_prob})^\gamma
     \log \text{min\_prob},

  with :math:`\log p_k` clamped below at :math:`\log \text{min\_prob}` (zero gradient below). The focal
  analogue of :func:`normalized_negative_cross_entropy` (:math:`\gamma = 0` gives it). By default the
  gradient is the exact gradient of the formula; ``detach_modulator=True`` treats every
  :math:`(1 - p_k)^\gamma` as a constant, as the official code (``.data``) does — same values, other
  gradients. Only the modulators are detached there; the normaliser still carries gradient through
  :math:`\log p_k`. Defaults :math:`\gamma = 0.5`, ``min_prob = 1e-7`` (all ANL configs).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    gamma: focusing parameter, >= 0.
    min_prob: probability floor, in (0, 1).
    detach_modulator: no gradient through :math:`(1 - p_k)^\gamma` (official convention).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 1].

  References:
    Ye et al., `Active Negative Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2312.02857>`_, NeurIPS 2023.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.normalized_negative_focal_loss(logits, labels, gamma=0.5))
    [0.7083 0.7283 0.7467]
  """
  _utils.check_range("gamma", gamma, 0.0)
  _check_min_prob(min_prob)
  _utils.check_bool("detach_modulator", detach_modulator)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_nnfl(logits, labels, gamma, min_prob, detach_modulator), where)


ANL_ACTIVE = ("nce", "nfl")


def active_term(active, logits, labels, gamma, detach_modulator):
  """NCE or NFL (the normalized active losses of ANL and JAL), on prepared inputs."""
  if active == "nce":
    return symmetric._nce(logits, labels)
  return symmetric._nfl(logits, labels, gamma, detach_modulator)


def active_negative_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  active: str = "nce",
  alpha: float = 5.0,
  beta: float = 5.0,
  gamma: float = 0.5,
  min_prob: float = 1e-7,
  detach_modulator: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Active negative loss :math:`\alpha \cdot \mathrm{active} + \beta \cdot \mathrm{negative}`.

  ANL-CE (``active='nce'``): :math:`\alpha\,\mathrm{NCE} + \beta\,\mathrm{NNCE}`; ANL-FL
  (``active='nfl'``): :math:`\alpha\,\mathrm{NFL} + \beta\,\mathrm{NNFL}` (``gamma`` and
  ``detach_modulator`` act on both focal terms; the official code detaches the modulators). The
  normalized active term fits the label; the normalized negative term (see
  :func:`normalized_negative_cross_entropy`) replaces APL's passive MAE/RCE and weights well-fitted
  samples more. Official configs: CIFAR-10 :math:`\alpha = \beta = 5` (default); CIFAR-100
  :math:`\alpha = 10, \beta = 1`; MNIST :math:`\alpha = \beta = 1`; WebVision :math:`\alpha = 20,
  \beta = 1`; ``min_prob = 1e-7``, :math:`\gamma = 0.5`.

  **Not included:** the official loss also adds :math:`\delta \sum_\theta |\theta|` over all model
  parameters (CIFAR-10 :math:`\delta = 5\cdot10^{-5}`, CIFAR-100 :math:`5\cdot10^{-7}`, MNIST
  :math:`10^{-6}`, WebVision :math:`5\cdot10^{-6}`) with weight decay 0; reproduce it with an L1 penalty
  in the optimizer. ANL-CE-ER (the batch entropy regulariser variant) is
  :func:`active_negative_loss_entropy_regularized`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    active: 'nce' (ANL-CE) or 'nfl' (ANL-FL).
    alpha: weight of the active loss, >= 0.
    beta: weight of the negative loss, >= 0.
    gamma: focal parameter of NFL/NNFL, >= 0.
    min_prob: probability floor of the negative loss, in (0, 1).
    detach_modulator: no gradient through the focal modulators (official convention).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, alpha + beta].

  References:
    Ye et al., `Active Negative Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2312.02857>`_, NeurIPS 2023.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.active_negative_loss(logits, labels, active="nce", alpha=5.0, beta=5.0))
    [3.6248 3.9898 4.8978]
  """
  _utils.check_choice("active", active, ANL_ACTIVE)
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  _utils.check_range("gamma", gamma, 0.0)
  _check_min_prob(min_prob)
  _utils.check_bool("detach_modulator", detach_modulator)
  logits, labels, where = _utils.prepare(logits, labels, where)
  if active == "nce":
    negative = _nnce(logits, labels, min_prob)
  else:
    negative = _nnfl(logits, labels, gamma, min_prob, detach_modulator)
  loss = alpha * active_term(active, logits, labels, gamma, detach_modulator) + beta * negative
  return _utils.mask(loss, where)


def _class_balance_regularizer(logits, where, min_prob, axis_name):
  """log K + sum_c pbar_c log pbar_c, pbar the mean clamped softmax of the valid examples of the global batch."""
  num_classes = logits.shape[-1]
  probs = jnp.clip(jax.nn.softmax(logits, axis=-1), min_prob, 1.0 - min_prob)
  if where is not None:
    probs = jnp.where(where[..., None], probs, 0.0)
  # Per-class sums over every leading dim, then over the devices: the statistic of the global batch.
  sums = jnp.sum(probs.reshape(-1, num_classes), axis=0)
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  # The official code divides by the sum of the clamped probabilities, not by the number of examples. The
  # floor only guards a batch with no valid example (every loss is masked then).
  mean = sums / jnp.maximum(jnp.sum(sums), jnp.finfo(sums.dtype).tiny)
  mean = jnp.clip(mean, min_prob, 1.0 - min_prob)
  return math.log(num_classes) + jnp.sum(mean * jnp.log(mean))


def active_negative_loss_entropy_regularized(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  alpha: float = 5.0,
  beta: float = 5.0,
  lam: float = 2.0,
  min_prob: float = 1e-7,
  where: Optional[ArrayLike] = None,
  axis_name: Optional[Hashable] = None,
) -> jax.Array:
  r"""ANL-CE with a batch entropy regulariser (ANL-CE-ER; Ye et al., NeurIPS 2023, official ``ANL_CE_ER``).

  .. math:: \ell_i = \alpha\,\mathrm{NCE}_i + \beta\,\mathrm{NNCE}_i + \lambda\,R, \qquad
     R = \log K + \sum_c \bar p_c \log \bar p_c, \quad
     \bar p = \frac{\sum_j \tilde p_j}{\sum_j \sum_c \tilde p_{jc}},

  with :math:`\tilde p_j = \mathrm{clip}(\mathrm{softmax}(z_j), \text{min\_prob}, 1 - \text{min\_prob})`
  and :math:`\bar p` clipped the same way. :math:`R = \mathrm{KL}(\bar p \,\|\, \text{uniform}) \ge 0`
  penalises a batch whose average prediction collapses onto few classes, the failure the paper reports for
  ANL under non-symmetric noise. NCE and NNCE are those of :func:`active_negative_loss` (``active='nce'``),
  except that here NNCE clamps :math:`p` to :math:`[\text{min\_prob}, 1 - \text{min\_prob}]`, as the
  official class does (the stand-alone NNCE clamps to :math:`[\text{min\_prob}, 1]`).

  **Batch coupling.** :math:`R` is a statistic of the whole batch: the sum :math:`j` runs over every valid
  example of the *global* batch (all leading dims; masked examples, ``where=False``, are left out). Inside
  ``jax.shard_map``/``pmap`` pass the data-parallel ``axis_name``: the per-class sums are ``psum``\ ed, so
  every device computes the :math:`R` of the global batch and the result equals one device holding the
  whole batch. Under plain ``jit`` with sharded inputs no ``axis_name`` is needed.

  **Per-example attribution.** The official loss is the batch mean :math:`\alpha\,\overline{\mathrm{NCE}}
  + \beta\,\overline{\mathrm{NNCE}} + \lambda R`. Every valid example's loss carries the whole term
  :math:`\lambda R`, so the **mean** of the per-example losses over the valid examples is the official value
  and its gradient is the official gradient (``R`` is differentiated through :math:`\bar p`, into every
  example's logits). Train on that mean, as usual; a *sum* over the batch would weight :math:`R` by the
  batch size. Masked examples get loss 0 and zero gradient; the trainer's ``pmean`` of per-device gradients
  of per-device means then gives the gradient of the global mean, ``R``'s part included (the transpose of
  the ``psum`` carries every device's share back to the logits it came from).

  Official configs (``config/*_anl_ce_er.json``): CIFAR-10 :math:`\alpha = \beta = 5, \lambda = 2`
  (defaults); CIFAR-100 :math:`\alpha = 10, \beta = 1, \lambda = 0.01`; ``min_prob = 1e-7``. Both also
  add an L1 parameter penalty :math:`\delta \sum_\theta |\theta|` (:math:`\delta = 5\cdot10^{-5}` and
  :math:`5\cdot10^{-7}`) with weight decay 0: an optimizer option (``l1_weight_decay``), not part of this
  loss. (As shipped, those configs lack ``"is_anl": true`` and cannot run in the official trainer.)

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    alpha: weight of NCE, >= 0.
    beta: weight of NNCE, >= 0.
    lam: weight of the batch entropy regulariser, >= 0.
    min_prob: probability clamp of NNCE and of the regulariser, in (0, 0.5).
    where: optional bool [...]; False examples get loss 0, zero gradient, and are excluded from
      :math:`\bar p`.
    axis_name: the data-parallel axis (inside ``shard_map``/``pmap``) over which :math:`\bar p` is summed;
      None for a batch held by one program.

  Returns:
    Per-example losses [...] (float32).

  References:
    Ye et al., `Active Negative Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2312.02857>`_, NeurIPS 2023; code ``Virusdoll/Active-Negative-Loss``
    (``loss.py:ANL_CE_ER``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> labels = jnp.array([0, 1, 2])
    >>> balanced = 3.0 * jnp.eye(3)  # the batch predicts every class equally often: R = 0
    >>> collapsed = jnp.array([[3.0, 0.0, 0.0]] * 3)  # every prediction on class 0: R > 0
    >>> for logits in (balanced, collapsed):
    ...   er = rl.active_negative_loss_entropy_regularized(logits, labels, lam=1.0)
    ...   print(round(float(er.mean() - rl.active_negative_loss(logits, labels).mean()), 4))
    0.0
    0.732
  """
  _utils.check_range("alpha", alpha, 0.0)
  _utils.check_range("beta", beta, 0.0)
  _utils.check_range("lam", lam, 0.0)
  _utils.check_range("min_prob", min_prob, 0.0, 0.5, lo_open=True, hi_open=True)
  logits, labels, where = _utils.prepare(logits, labels, where)
  log_mp = _log_min_prob(min_prob)
  log_max = jnp.log1p(-jnp.asarray(min_prob, jnp.float32))
  nnce = 1.0 - symmetric._normalize(logits, labels, lambda lp: jnp.clip(lp, log_mp, log_max) - log_mp)
  regularizer = _class_balance_regularizer(logits, where, min_prob, axis_name)
  loss = alpha * symmetric._nce(logits, labels) + beta * nnce + lam * regularizer
  return _utils.mask(loss, where)
