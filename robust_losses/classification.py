"""Standard classification losses and simple robust baselines (MAE, MSE, focal, bootstrapping).

All losses take logits [..., K] and one-hot or soft labels [..., K] and return per-example losses [...].
Computation is in float32 whatever the logits dtype. `where` (bool [...]) marks examples to ignore:
their loss is 0 with zero gradient, even if their logits are NaN.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from robust_losses import _utils


def softmax_cross_entropy(logits, labels, *, where: Optional[jax.Array] = None) -> jax.Array:
  r"""Softmax cross entropy, :math:`-\sum_k y_k \log p_k` with :math:`p = \mathrm{softmax}(z)`.

  Delegates to :func:`optax.losses.softmax_cross_entropy` (computed from ``log_softmax``); this wrapper
  only adds float32 computation and the per-example ``where`` mask. The gradient is ``p - y``: it grows
  with how wrong the prediction is, which is why CE overfits noisy labels.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [..., K] one-hot or soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  return _utils.mask(optax.losses.softmax_cross_entropy(logits, labels), where)


def sigmoid_binary_cross_entropy(logits, labels, *, where: Optional[jax.Array] = None) -> jax.Array:
  r"""One-vs-all binary cross entropy on sigmoid outputs, averaged over classes.

  .. math:: \frac{1}{K}\sum_k -y_k \log \sigma(z_k) - (1 - y_k) \log(1 - \sigma(z_k))

  Each class is an independent binary problem; the mean over classes (not the sum) follows the Keras
  convention, so the loss scale does not grow with K. The elementwise part is
  :func:`optax.losses.sigmoid_binary_cross_entropy` (stable ``log_sigmoid`` form). Labels may be
  multi-hot.

  Args:
    logits: [..., K] unnormalised scores (one sigmoid per class).
    labels: [..., K] targets in [0, 1].
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  bce = optax.losses.sigmoid_binary_cross_entropy(logits, labels)
  return _utils.mask(jnp.mean(bce, axis=-1), where)


def mean_absolute_error(logits, labels, *, where: Optional[jax.Array] = None) -> jax.Array:
  r"""MAE in probability space, :math:`\sum_k |y_k - p_k|` (= :math:`2 - 2 p_y` for one-hot labels).

  Symmetric in the sense of Ghosh et al. (AAAI 2017): :math:`\sum_j L(f(x), e_j) = 2K - 2` for every
  prediction, which makes it provably robust to symmetric label noise. The gradient is
  :math:`2 p_y \cdot \nabla \mathrm{CE}` for one-hot labels, so samples the model is unsure about barely
  contribute: MAE underfits and trains slowly (Zhang & Sabuncu, 2018). Per-example it is a sum over
  classes; the "mean" is over the batch, taken by the caller.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [..., K] one-hot or soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32), in [0, 2].
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  probs = jax.nn.softmax(logits, axis=-1)
  return _utils.mask(jnp.sum(jnp.abs(labels - probs), axis=-1), where)


def mean_squared_error(logits, labels, *, where: Optional[jax.Array] = None) -> jax.Array:
  r"""MSE in probability space (Brier score), :math:`\sum_k (y_k - p_k)^2`.

  Bounded (in [0, 2]) and hence more tolerant of noisy labels than CE; like MAE its gradient vanishes
  for samples predicted with low :math:`p_y`. Per-example it is a sum over classes.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [..., K] one-hot or soft labels.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).
  """
  logits, labels, where = _utils.prepare(logits, labels, where)
  probs = jax.nn.softmax(logits, axis=-1)
  return _utils.mask(jnp.sum(jnp.square(labels - probs), axis=-1), where)


def focal_terms(log_probs: jax.Array, gamma) -> jax.Array:
  r"""Elementwise :math:`(1 - p_k)^\gamma (-\log p_k)`, finite with finite gradients for all inputs.

  :math:`1 - p` is computed as ``-expm1(log p)`` (exact for p near 1). Where it is exactly 0 the factor is
  the constant :math:`0^\gamma` (1 at :math:`\gamma = 0`), because the derivative of :math:`x^\gamma`
  at 0 is infinite for :math:`\gamma < 1` and would otherwise turn the gradient into NaN.
  """
  one_minus_p = -jnp.expm1(log_probs)
  positive = one_minus_p > 0
  modulator = jnp.where(positive, jnp.power(jnp.where(positive, one_minus_p, 1.0), gamma),
                        jnp.power(0.0, gamma))
  return -modulator * log_probs


def focal_loss(logits, labels, *, gamma: float = 0.5, where: Optional[jax.Array] = None) -> jax.Array:
  r"""Softmax focal loss, :math:`-\sum_k y_k (1 - p_k)^\gamma \log p_k` (Lin et al., ICCV 2017).

  The factor :math:`(1 - p_k)^\gamma` down-weights well-classified examples, so training focuses on hard
  ones; :math:`\gamma = 0` is CE. Note this is the opposite of what helps with label noise (mislabelled
  examples are the hard ones): focal loss is a baseline here and the active term of NFL / APL.

  Default :math:`\gamma = 0.5`, the value used in the noisy-label baselines of Ma et al. (ICML 2020);
  Lin et al. use :math:`\gamma = 2` for detection.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [..., K] one-hot or soft labels.
    gamma: focusing parameter, >= 0.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Lin et al., `Focal Loss for Dense Object Detection <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.
  """
  _utils.check_range("gamma", gamma, 0.0)
  logits, labels, where = _utils.prepare(logits, labels, where)
  terms = focal_terms(jax.nn.log_softmax(logits, axis=-1), gamma)
  return _utils.mask(jnp.sum(labels * terms, axis=-1), where)


BOOTSTRAP_MODES = ("soft", "hard")


def bootstrapped_cross_entropy(logits, labels, *, beta: float = 0.95, mode: str = "soft",
                               where: Optional[jax.Array] = None) -> jax.Array:
  r"""Bootstrapped cross entropy (Reed et al., 2015): CE against a mix of the label and the prediction.

  .. math:: t = \beta y + (1 - \beta) \hat{q}, \qquad L = -\sum_k t_k \log p_k

  with :math:`\hat{q} = p` (``mode='soft'``) or :math:`\hat{q} = \mathrm{onehot}(\arg\max_k p_k)`
  (``mode='hard'``). The prediction part of the target goes through ``stop_gradient``: it is a target,
  not something to optimise, so the loss pulls the model partly towards its own (more consistent)
  beliefs and a confidently contradicted label pulls less. :math:`\beta = 1` is CE.

  Defaults :math:`\beta = 0.95` (soft, as in the paper); the paper uses :math:`\beta = 0.8` for hard
  bootstrapping — pass it explicitly with ``mode='hard'``.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [..., K] one-hot or soft labels.
    beta: weight of the given label in the target, in [0, 1].
    mode: 'soft' or 'hard'.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Reed et al., `Training Deep Neural Networks on Noisy Labels with Bootstrapping
    <https://arxiv.org/abs/1412.6596>`_, ICLR workshop 2015.
  """
  _utils.check_range("beta", beta, 0.0, 1.0)
  _utils.check_choice("mode", mode, BOOTSTRAP_MODES)
  logits, labels, where = _utils.prepare(logits, labels, where)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  if mode == "soft":
    prediction = jnp.exp(log_probs)
  else:
    prediction = jax.nn.one_hot(jnp.argmax(log_probs, axis=-1), logits.shape[-1], dtype=log_probs.dtype)
  target = beta * labels + (1.0 - beta) * jax.lax.stop_gradient(prediction)
  return _utils.mask(-jnp.sum(target * log_probs, axis=-1), where)
