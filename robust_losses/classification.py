"""Standard classification losses and simple robust baselines (MAE, MSE, focal, bootstrapping).

All losses take logits [..., K] and integer class ids [...] or one-hot/soft labels [..., K] and return
per-example losses [...].
Computation is in float32 whatever the logits dtype. `where` (bool [...]) marks examples to ignore:
their loss is 0 with zero gradient, even if their logits are NaN.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from robust_losses import _utils


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, *, where: Optional[ArrayLike] = None) -> jax.Array:
  r"""Softmax cross entropy, :math:`-\sum_k y_k \log p_k` with :math:`p = \mathrm{softmax}(z)`.

  Delegates to :func:`optax.losses.softmax_cross_entropy` (computed from ``log_softmax``); this wrapper
  only adds float32 computation and the per-example ``where`` mask. The gradient is ``p - y``: it grows
  with how wrong the prediction is, which is why CE overfits noisy labels.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Goodfellow, Bengio & Courville, `Deep Learning <https://www.deeplearningbook.org/>`_, MIT Press 2016,
    section 6.2.2.3 (softmax units and their cross entropy).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.softmax_cross_entropy(logits, labels))
    [0.161  0.4688 1.9612]
    >>> print(rl.softmax_cross_entropy(logits, jnp.eye(4)[labels]))  # one-hot labels: the same values
    [0.161  0.4688 1.9612]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(_utils.cross_entropy(logits, labels), where)


def sigmoid_binary_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""One-vs-all binary cross entropy on sigmoid outputs, averaged over classes.

  .. math:: \frac{1}{K}\sum_k -y_k \log \sigma(z_k) - (1 - y_k) \log(1 - \sigma(z_k))

  Each class is an independent binary problem; the mean over classes (not the sum) follows the Keras
  convention, so the loss scale does not grow with K. The elementwise part is
  :func:`optax.losses.sigmoid_binary_cross_entropy` (stable ``log_sigmoid`` form). Labels may be
  multi-hot.

  Args:
    logits: [..., K] unnormalised scores (one sigmoid per class).
    labels: [...] integer class ids or [..., K] targets in [0, 1].
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Goodfellow, Bengio & Courville, `Deep Learning <https://www.deeplearningbook.org/>`_, MIT Press 2016,
    section 6.2.2.2 (sigmoid units for Bernoulli outputs); the mean over classes follows Keras's
    ``binary_crossentropy``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.sigmoid_binary_cross_entropy(logits, labels))
    [0.5622 0.5258 1.0802]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(sigmoid_bce(logits, labels), where)


def sigmoid_bce(logits, labels) -> jax.Array:
  """The one-vs-all BCE (mean over classes) of prepared inputs (see `_utils.prepare`), unmasked."""
  if _utils.is_ids(logits, labels):
    return _one_vs_all_softplus_sum(logits, labels) / logits.shape[-1]
  return jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, labels), axis=-1)


def _one_vs_all_softplus_sum(logits, labels) -> jax.Array:
  r"""For class ids: :math:`\sum_k -\log\sigma(\pm z_k)` (+ for the label, - for the other classes),
  i.e. K times the one-vs-all BCE, with a written-out derivative.

  Each class's term is :math:`\mathrm{softplus}(v_k)` with :math:`v_k = -z_y` for the label and
  :math:`v_k = z_k` otherwise: the same per-class terms as the one-hot form (no cancellation for a large
  :math:`z_y`), summed as :math:`\sum_k \max(v_k, 0) + \sum_k \mathrm{log1p}(e^{-|v_k|})`. Written as two
  plain sums of elementwise terms, XLA:CPU evaluates them inside its vectorised (YNNPACK) reductions;
  ``jax.nn.log_sigmoid`` / ``softplus`` (``logaddexp`` with its NaN guards) is elementwise code there that
  costs about seven exps per element. The derivative :math:`\sum_k \pm\sigma(v_k)\, dz_k` is written out
  (``jax.custom_jvp``: exactly the derivative of the formula, in forward and reverse mode), with
  :math:`\sigma(v)` taken from the value's :math:`e^{-|v|}`: one exp per element for value and derivative.
  """

  def value(z, y):
    v = jnp.where(_utils.label_mask(z, y), -z, z)
    return jnp.sum(jnp.log1p(jnp.exp(-jnp.abs(v))), axis=-1) + jnp.sum(jnp.maximum(v, 0.0), axis=-1)

  def value_and_tangent(z, y, dz):
    is_label = _utils.label_mask(z, y)
    v = jnp.where(is_label, -z, z)
    e = jnp.exp(-jnp.abs(v))
    total = jnp.sum(jnp.log1p(e), axis=-1) + jnp.sum(jnp.maximum(v, 0.0), axis=-1)
    # sigma(v) from the same exp: 1 / (1 + e) for v >= 0, e / (1 + e) below (no overflow either side).
    sigmoid = jnp.where(v >= 0, 1.0, e) / (1.0 + e)
    return total, jnp.sum(jnp.where(is_label, -sigmoid, sigmoid) * dz, axis=-1)

  return _utils.with_jvp(value, value_and_tangent)(logits, labels)


def mean_absolute_error(logits: ArrayLike, labels: ArrayLike, *, where: Optional[ArrayLike] = None) -> jax.Array:
  r"""MAE in probability space, :math:`\sum_k |y_k - p_k|` (= :math:`2 - 2 p_y` for one-hot labels).

  Symmetric in the sense of Ghosh et al. (AAAI 2017): :math:`\sum_j L(f(x), e_j) = 2K - 2` for every
  prediction, which makes it provably robust to symmetric label noise. The gradient is
  :math:`2 p_y \cdot \nabla \mathrm{CE}` for one-hot labels, so samples the model is unsure about barely
  contribute: MAE underfits and trains slowly (Zhang & Sabuncu, 2018). Per-example it is a sum over
  classes; the "mean" is over the batch, taken by the caller.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 2].

  References:
    Ghosh, Kumar & Sastry, `Robust Loss Functions under Label Noise for Deep Neural Networks
    <https://arxiv.org/abs/1712.09482>`_, AAAI 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.mean_absolute_error(logits, labels))  # 2 (1 - p_y), at most 2
    [0.2974 0.7485 1.7186]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  if _utils.is_ids(logits, labels):
    # 2 (1 - p_y), with 1 - p_y = -expm1(log p_y) (exact near p_y = 1).
    return _utils.mask(-2.0 * jnp.expm1(_utils.label_log_prob(logits, labels)), where)
  probs = jax.nn.softmax(logits, axis=-1)
  return _utils.mask(jnp.sum(jnp.abs(labels - probs), axis=-1), where)


def mean_squared_error(logits: ArrayLike, labels: ArrayLike, *, where: Optional[ArrayLike] = None) -> jax.Array:
  r"""MSE in probability space (Brier score), :math:`\sum_k (y_k - p_k)^2`.

  Bounded (in [0, 2]) and hence more tolerant of noisy labels than CE; like MAE its gradient vanishes
  for samples predicted with low :math:`p_y`. Per-example it is a sum over classes.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Brier, Verification of Forecasts Expressed in Terms of Probability, Monthly Weather Review 78(1),
    1-3, 1950; as a noisy-label baseline: Ghosh, Kumar & Sastry, `Robust Loss Functions under Label
    Noise for Deep Neural Networks <https://arxiv.org/abs/1712.09482>`_, AAAI 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.mean_squared_error(logits, labels))
    [0.0312 0.1886 1.3355]
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  probs = jax.nn.softmax(logits, axis=-1)
  return _utils.mask(jnp.sum(jnp.square(_utils.one_hot(logits, labels) - probs), axis=-1), where)


def _modulator_power(gamma):
  """x -> x**gamma; exact special cases for concrete gamma: sqrt/identity/square cost far less than pow
  (an exp and a log; on XLA:CPU pow is ~14 times an exp)."""
  power = {0.5: jnp.sqrt, 1.0: lambda x: x, 2.0: jnp.square}.get(gamma) if _utils.is_concrete(gamma) else None
  return power or (lambda x: jnp.power(x, gamma))


def focal_terms(log_probs: jax.Array, gamma, detach_modulator: bool = False) -> jax.Array:
  r"""Elementwise :math:`(1 - p_k)^\gamma (-\log p_k)`, finite with finite gradients for all inputs.

  :math:`1 - p` is computed as ``-expm1(log p)`` (exact for p near 1). Where it is exactly 0 the factor is
  the constant :math:`0^\gamma` (1 at :math:`\gamma = 0`), because the derivative of :math:`x^\gamma`
  at 0 is infinite for :math:`\gamma < 1` and would otherwise turn the gradient into NaN. With
  ``detach_modulator`` the factor :math:`(1 - p_k)^\gamma` is a constant for the gradient.
  """
  one_minus_p = -jnp.expm1(log_probs)
  positive = one_minus_p > 0
  safe = jnp.where(positive, one_minus_p, 1.0)
  modulator = jnp.where(positive, _modulator_power(gamma)(safe), jnp.power(0.0, gamma))
  if detach_modulator:
    modulator = jax.lax.stop_gradient(modulator)
  return -modulator * log_probs


def focal_class_terms(gamma, detach_modulator: bool = False):
  r"""`focal_terms` for every class at once, as ``class_terms`` of `_utils.label_log_prob_and_sum`:
  ``(log_p, p) -> (t, dt/dlog p)`` for a concrete ``gamma``.

  :math:`1 - p` is ``1 - p`` here, from the softmax the caller already has, not ``-expm1(log p)``: expm1
  costs ~4 exps per element on XLA:CPU and is no more accurate in this use (both carry the rounding of
  the softmax's sum when p is near 1). The derivative is written out,
  :math:`dt/d\log p = \gamma\, p \log p\, (1 - p)^{\gamma - 1} - (1 - p)^\gamma`, with the same
  convention as `focal_terms` where :math:`1 - p = 0` (constant factor :math:`0^\gamma`).
  """
  power = _modulator_power(gamma)

  def terms(log_p, p):
    one_minus_p = 1.0 - p
    positive = one_minus_p > 0
    safe = jnp.where(positive, one_minus_p, 1.0)
    modulator = jnp.where(positive, power(safe), jnp.power(0.0, gamma))
    if detach_modulator:
      # A constant at every order, as stop_gradient makes it in the formula. Also in t: second derivatives
      # differentiate the primal terms of the rule in `label_log_prob_and_sum` too.
      modulator = jax.lax.stop_gradient(modulator)
      return -modulator * log_p, -modulator
    t = -modulator * log_p
    return t, jnp.where(positive, gamma * p * log_p * (modulator / safe), 0.0) - modulator

  return terms


def focal_loss(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  gamma: float = 0.5,
  detach_modulator: bool = False,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Softmax focal loss, :math:`-\sum_k y_k (1 - p_k)^\gamma \log p_k` (Lin et al., ICCV 2017).

  The factor :math:`(1 - p_k)^\gamma` down-weights well-classified examples, so training focuses on hard
  ones; :math:`\gamma = 0` is CE. Note this is the opposite of what helps with label noise (mislabelled
  examples are the hard ones): focal loss is a baseline here and the active term of NFL / APL.

  Default :math:`\gamma = 0.5`, the value used in the noisy-label baselines of Ma et al. (ICML 2020);
  Lin et al. use :math:`\gamma = 2` for detection.

  Gradient convention: by default the exact gradient of the formula (the modulator is differentiated, as
  in Lin et al.). ``detach_modulator=True`` treats :math:`(1 - p_k)^\gamma` as a constant, as the APL
  reference code does (``HanxunH/Active-Passive-Losses`` ``FocalLoss`` uses ``.data``): same values,
  different gradients; use it to reproduce numbers from that codebase.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    gamma: focusing parameter, >= 0.
    detach_modulator: no gradient through :math:`(1 - p_k)^\gamma` (APL reference convention).
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.focal_loss(logits, labels, gamma=2.0))
    [0.0036 0.0657 1.4482]
  """
  _utils.check_range("gamma", gamma, 0.0)
  _utils.check_bool("detach_modulator", detach_modulator)
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(focal(logits, labels, gamma, detach_modulator), where)


def focal(logits, labels, gamma, detach_modulator: bool = False) -> jax.Array:
  """The focal loss of prepared inputs (see `_utils.prepare`), unmasked."""
  return _utils.label_sum(logits, labels, lambda lp: focal_terms(lp, gamma, detach_modulator))


BOOTSTRAP_MODES = ("soft", "hard")


def bootstrapped_cross_entropy(
  logits: ArrayLike, labels: ArrayLike, *, beta: float = 0.95, mode: str = "soft", where: Optional[ArrayLike] = None
) -> jax.Array:
  r"""Bootstrapped cross entropy (Reed et al., 2015): CE against a mix of the label and the prediction.

  .. math:: t = \beta y + (1 - \beta) \hat{q}, \qquad L = -\sum_k t_k \log p_k

  ``mode='soft'``: :math:`\hat{q} = p`, so :math:`L = \beta\,\mathrm{CE} + (1 - \beta) H(p)`: "softmax
  regression with minimum entropy regularization" (Reed et al.). The prediction inside the target is part
  of the objective and is differentiated: the gradient is :math:`\beta \nabla\mathrm{CE} + (1 - \beta)
  \nabla H(p)`, as in the SCE authors' Keras implementation. (With the prediction behind
  ``stop_gradient`` the gradient would be exactly :math:`\beta \nabla\mathrm{CE}` — plain CE at a
  smaller learning rate.) The entropy term pushes the model towards confident predictions, so a label it
  confidently contradicts is fitted more slowly.

  ``mode='hard'``: :math:`\hat{q} = \mathrm{onehot}(\arg\max_k p_k)`, a piecewise-constant target
  (no gradient flows through the argmax): :math:`L = -\beta \log p_y - (1 - \beta) \log p_{\hat{k}}`.

  :math:`\beta = 1` is CE. Default :math:`\beta = 0.95` (soft, as in the paper); the paper uses
  :math:`\beta = 0.8` for hard bootstrapping — pass it explicitly with ``mode='hard'``.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    beta: weight of the given label in the target, in [0, 1].
    mode: 'soft' or 'hard'.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Reed et al., `Training Deep Neural Networks on Noisy Labels with Bootstrapping
    <https://arxiv.org/abs/1412.6596>`_, ICLR workshop 2015.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.bootstrapped_cross_entropy(logits, labels, beta=0.95))
    [0.1811 0.4986 1.9009]
    >>> print(rl.bootstrapped_cross_entropy(logits, labels, beta=0.8, mode="hard"))
    [0.161  0.4688 1.6212]
  """
  _utils.check_range("beta", beta, 0.0, 1.0)
  _utils.check_choice("mode", mode, BOOTSTRAP_MODES)
  logits, labels, where = _utils.prepare(logits, labels, where)
  if mode == "soft" and _utils.is_ids(logits, labels):
    # One softmax pass for -log p_y and H(p), with a written-out gradient.
    log_p_y, entropy = _utils.label_log_prob_and_entropy(logits, labels)
    return _utils.mask(-beta * log_p_y + (1.0 - beta) * entropy, where)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  ce = _utils.label_sum(logits, labels, lambda lp: -lp, log_probs=log_probs)
  if mode == "soft":
    own = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)  # H(p), differentiated
  else:
    # -log p at the argmax: the first of tied maxima, as one_hot(argmax) picks.
    own = -_utils.at_label(log_probs, jnp.argmax(log_probs, axis=-1))
  return _utils.mask(beta * ce + (1.0 - beta) * own, where)
