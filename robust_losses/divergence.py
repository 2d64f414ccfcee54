r"""Divergence-based losses: Jensen-Shannon and its generalisation to several views (Englesson & Azizpour,
NeurIPS 2021) and LDR-KL (Zhu et al., ICML 2023)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robust_losses import _utils, protocol

_JS_FLOOR = 1e-7  # the official clamp inside every log
_JS_WEIGHTS_SUM_TOLERANCE = 1e-3  # the official `assert abs(1.0 - sum(self.weights)) < 0.001`


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
  This is the one-view JS; GJS (several augmented views) is :func:`generalized_jensen_shannon_divergence`.

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


def _check_js_weights(js_weights) -> tuple[float, ...]:
  """The weights as Python floats: concrete, at least 3 (label + 2 views), each in (0, 1), summing to 1."""
  try:
    weights = tuple(float(w) for w in js_weights)
  except (TypeError, jax.errors.ConcretizationTypeError):
    raise ValueError(
      f"js_weights={js_weights!r} must be a sequence of concrete numbers (label weight, then one weight per "
      "view; their number fixes the number of views)"
    ) from None
  if len(weights) < 3:
    raise ValueError(
      f"js_weights={js_weights!r} has {len(weights)} weights; valid is at least 3 (the label's, then one per view, "
      "at least 2 views); for one view use jensen_shannon_divergence(pi=js_weights[0])"
    )
  for i, w in enumerate(weights):
    _utils.check_range(f"js_weights[{i}]", w, 0.0, 1.0, lo_open=True, hi_open=True)
  if abs(sum(weights) - 1.0) > _JS_WEIGHTS_SUM_TOLERANCE:
    raise ValueError(
      f"js_weights={js_weights!r} sum to {sum(weights):g}; valid weights sum to 1 within "
      f"{_JS_WEIGHTS_SUM_TOLERANCE:g} (as the official code asserts)"
    )
  return weights


def generalized_jensen_shannon_num_views(js_weights: Sequence[float]) -> int:
  """M, the number of views :func:`generalized_jensen_shannon_divergence` takes: ``len(js_weights) - 1``."""
  return len(_check_js_weights(js_weights)) - 1


def generalized_jensen_shannon_divergence(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  js_weights: tuple[float, ...] = (0.9, 0.05, 0.05),
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Generalized Jensen-Shannon divergence over M >= 2 augmented views (GJS; Englesson & Azizpour).

  .. math:: \mathcal{L} = Z \Big[\pi_1 \mathrm{KL}(y \| m) + \sum_{i=2}^{M+1} \pi_i\,
     \mathrm{KL}(p^{(i)} \| m)\Big], \quad m = \pi_1 y + \sum_{i=2}^{M+1} \pi_i p^{(i)}, \quad
     Z = \frac{-1}{(1 - \pi_1)\log(1 - \pi_1)},

  where :math:`p^{(i)} = \mathrm{softmax}(z^{(i)})` is the prediction on the (i-1)-th augmented view of
  the example and :math:`\pi = ` ``js_weights`` (label weight first, summing to 1). Besides the
  label-fitting JS term of :func:`jensen_shannon_divergence` (the M = 1 case), the views are pulled
  towards their common mean :math:`m`: a consistency regulariser between augmentations. As in the
  official code (``JensenShannonDivergenceWeightedScaled`` with a list of view logits), every log reads
  its argument clamped below at 1e-7 (:math:`\log m` also above at 1), with zero gradient through the
  clamp; terms with :math:`d_k = 0` contribute 0. The batch mean of the per-example losses is the
  official loss.

  **Views contract** (what a training loop must pass; ``Loss.num_views`` of the registry returns M):

  * ``logits``: float [M, ..., K], the M views **stacked on a new leading axis**: ``logits[i]`` are the
    model's logits for the i-th augmented copy of the batch, weighted by ``js_weights[i + 1]``; row ``b``
    of every view must be the same example. M = ``len(js_weights) - 1`` is checked against
    ``logits.shape[0]``.
  * ``labels``: the batch's labels, **not** repeated per view: class ids [...] with
    ``labels.shape == logits.shape[1:-1]`` or one-hot/soft labels [..., K] with
    ``labels.shape == logits.shape[1:]``.
  * ``where``: optional bool, broadcastable to ``logits.shape[1:-1]``: one flag per example, for all its
    views.
  * Returns per-example losses of shape ``logits.shape[1:-1]`` (one per example, not per view).
  * Official protocol for the views: each view is an independent strong augmentation of the same images
    (``augs: ss`` = two RandAugment N=1, M=3 + random crop/flip + Cutout 16 draws), and each view is run
    through the network as its own batch (``--onebatch`` off: BatchNorm statistics per view). Training
    accuracy is logged per view; evaluation runs the model once on un-augmented images.

  Defaults (``scripts/{C10,C100}/{sym,asym}/gjs-*.yaml``, ``augs: ss``, so M = 2):

  ======================  =================================================================
  CIFAR-10 symmetric      0 %: (0.5, .25, .25); 20 %: (0.3, .35, .35); 40 %: (0.9, .05, .05)
                          (default); 60 % and 80 %: (0.1, .45, .45)
  CIFAR-10 asymmetric     20 % and 40 %: (0.3, .35, .35)
  CIFAR-100 symmetric     0 % and 20 %: (0.3, .35, .35); 40 %: (0.5, .25, .25); 60 %: (0.9, .05, .05);
                          80 %: (0.1, .45, .45)
  CIFAR-100 asymmetric    20 %: (0.5, .25, .25); 40 %: (0.1, .45, .45)
  ======================  =================================================================

  The weights depend on the noise rate. WebVision's config (0.1, .45, .45) uses the *unscaled* variant
  (``JSWC``): this loss divided by Z. The official training: PreActResNet-34, 400 epochs, batch 128, SGD
  with Nesterov momentum 0.9, learning rate ×0.1 at epochs 200 and 300 (CIFAR-10: lr 0.1, weight decay
  5e-4, 1e-3 for asymmetric noise; CIFAR-100: lr 0.2, weight decay 5e-5 for symmetric noise).

  Args:
    logits: [M, ..., K] unnormalised scores of the M views, stacked on the leading axis.
    labels: [...] integer class ids or [..., K] one-hot/soft labels (the shape of one view, as above).
    js_weights: (π_1, π_2, ..., π_{M+1}): the label's weight, then one per view; at least 3 numbers,
      each in (0, 1), summing to 1 within 1e-3. Must be concrete (their number fixes M).
    where: optional bool [...]; False examples get loss 0 and zero gradient in every view.

  Returns:
    Per-example losses [...] (float32), of shape ``logits.shape[1:-1]``.

  Raises:
    ValueError: for invalid ``js_weights`` or when ``logits.shape[0]`` is not M, before any computation.

  References:
    Englesson & Azizpour, `Generalized Jensen-Shannon Divergence Loss for Learning with Noisy Labels
    <https://arxiv.org/abs/2105.04522>`_, NeurIPS 2021; code ``ErikEnglesson/GJS`` (``losses.py``,
    ``train.py``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import robust_losses as rl
    >>> view1 = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # [B=2, K=3]: the batch, one augmentation
    >>> view2 = jnp.array([[1.5, 0.5, -1.0], [0.5, 1.0, -0.5]])  # the same two examples, another one
    >>> logits = jnp.stack([view1, view2])  # [M=2, B=2, K=3]
    >>> losses = rl.generalized_jensen_shannon_divergence(logits, jnp.array([0, 1]), js_weights=(0.5, 0.25, 0.25))
    >>> print(losses.shape, rl.get("generalized_jensen_shannon_divergence", js_weights=(0.5, 0.25, 0.25)).num_views)
    (2,) 2
  """
  weights = _check_js_weights(js_weights)
  num_views = len(weights) - 1
  shape = jnp.shape(logits)
  if len(shape) < 2 or shape[0] != num_views:
    raise ValueError(
      f"logits of shape {shape} must stack the {num_views} views of js_weights={js_weights!r} on the leading "
      f"axis: [{num_views}, ..., K]"
    )
  # Each view is prepared as a batch of its own (dtype, label form, masking); labels and where are shared.
  views = [_utils.prepare(jnp.asarray(logits)[i], labels, where) for i in range(num_views)]
  _, labels, where = views[0]
  y = _utils.one_hot(views[0][0], labels)  # KL(p || m) needs every class, so ids are expanded
  log_ps = [jax.nn.log_softmax(z, axis=-1) for z, _, _ in views]
  ps = [jnp.exp(log_p) for log_p in log_ps]
  m = weights[0] * y + sum(w * p for w, p in zip(weights[1:], ps))
  log_floor = math.log(_JS_FLOOR)
  log_m = jnp.log(jnp.clip(m, _JS_FLOOR, 1.0))
  kl_y = jnp.sum(y * (jnp.log(jnp.maximum(y, _JS_FLOOR)) - log_m), axis=-1)
  kl_views = [jnp.sum(p * (jnp.maximum(log_p, log_floor) - log_m), axis=-1) for p, log_p in zip(ps, log_ps)]
  scale = -1.0 / ((1.0 - weights[0]) * math.log1p(-weights[0]))
  total = weights[0] * kl_y + sum(w * kl for w, kl in zip(weights[1:], kl_views))
  return _utils.mask(scale * total, where)


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


# A training loop passes GJS the logits of M augmented views of each example (protocol.Training.num_views).
TRAINING = {
  "generalized_jensen_shannon_divergence": protocol.Training(
    num_views=lambda hp: generalized_jensen_shannon_num_views(hp["js_weights"])
  )
}
