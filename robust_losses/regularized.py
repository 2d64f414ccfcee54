r"""CE with a regulariser: early-learning regularisation (ELR; Liu et al., NeurIPS 2020) and sparse
regularisation (SR; Zhou et al., ICCV 2021).

ELR keeps per-example state (a running average of the model's predictions) through the loss-state protocol
(`protocol.Training`, declared here in `TRAINING`); SR follows a schedule of the epoch (the ``epoch`` call
argument).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robust_losses import _utils, protocol

_ELR_CLAMP = 1e-4  # p is clamped to [1e-4, 1 - 1e-4] in the regulariser, as the official code


def early_learning_regularization(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  beta: float = 0.7,
  lam: float = 3.0,
  targets: Optional[ArrayLike] = None,
  where: Optional[ArrayLike] = None,
  return_aux: bool = False,
) -> Union[jax.Array, tuple[jax.Array, dict[str, Any]]]:
  r"""Early-learning regularisation: :math:`\mathrm{CE} + \lambda \log(1 - \langle t_i, p_i \rangle)`
  (ELR; Liu et al., NeurIPS 2020).

  Every training example i keeps a target :math:`t_i` [K], a running average of the model's (detached)
  predictions. Each call first updates the batch's targets and then uses the *updated* ones, as the
  official code:

  .. math:: t_i \leftarrow \beta t_i + (1 - \beta) \frac{\bar p_i}{\sum_k \bar p_{ik}}, \quad
     \mathcal{L}_i = \mathrm{CE}(z_i, y_i) + \lambda \log\left(1 - \sum_k t_{ik} p_{ik}\right),

  with :math:`\bar p = \mathrm{stop\_gradient}(p)` and :math:`p = \mathrm{clip}(\mathrm{softmax}(z),
  10^{-4}, 1 - 10^{-4})` in both places (zero gradient outside the clip; CE uses the raw logits).
  Gradient: the regulariser pulls p towards the targets, which remember the early-learning predictions
  (mostly right even for mislabelled examples), counteracting CE's gradient on memorised noisy labels.
  The loss can be negative.

  State: ``targets`` are the batch's rows of the per-example state, **required**: zeros initially
  (`elr_init`; declared for training loops in `TRAINING`, the `protocol.Training` record, under the key
  ``targets``), then the rows this function returned for those examples. With ``return_aux=True`` it
  returns ``(losses, {"example_state": {"targets": new_rows}})``; rows of examples masked out by ``where``
  (or a negative class id) come back unchanged. Calling it without ``targets`` is a ValueError: without
  its memory ELR is another method (the regulariser would see only this call's
  :math:`(1 - \beta)\bar p`); pass ``targets=jnp.zeros_like(logits)`` if that is what you want.

  Defaults: CIFAR-10 symmetric :math:`\beta = 0.7, \lambda = 3`; CIFAR-10 asymmetric
  :math:`\beta = 0.9, \lambda = 1`; CIFAR-100 :math:`\beta = 0.9, \lambda = 7`.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    beta: momentum of the targets, in [0, 1).
    lam: weight λ of the regulariser, >= 0.
    targets: [..., K] per-example targets (the batch's state rows); required.
    where: optional bool [...]; False examples get loss 0 and zero gradient.
    return_aux: also return the updated state rows.

  Returns:
    Per-example losses [...] (float32), or (losses, aux) with ``return_aux``.

  References:
    Liu et al., `Early-Learning Regularization Prevents Memorization of Noisy Labels
    <https://arxiv.org/abs/2007.00151>`_, NeurIPS 2020; code ``shengliu66/ELR``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> targets = jnp.zeros_like(logits)  # the batch's rows of the target memory, zeros initially
    >>> print(rl.early_learning_regularization(logits, labels, beta=0.7, lam=3.0, targets=targets))
    [-0.585   0.044   1.3473]
  """
  _utils.check_range("beta", beta, 0.0, 1.0, hi_open=True)
  _utils.check_range("lam", lam, 0.0)
  if targets is None:
    raise ValueError(
      "early_learning_regularization needs its per-example state: pass targets= (the batch's rows [..., K] of "
      "the target memory, zeros initially: elr_init / Loss.init_example_state), and keep the rows it returns "
      "with return_aux=True; without them it would silently be another method"
    )
  logits, labels, where = _utils.prepare(logits, labels, where)
  if np.shape(targets) != logits.shape:
    raise ValueError(f"targets must have the shape of logits {logits.shape}; got {np.shape(targets)}")
  probs = jnp.clip(jax.nn.softmax(logits, axis=-1), _ELR_CLAMP, 1.0 - _ELR_CLAMP)
  fixed = jax.lax.stop_gradient(probs)
  old = jnp.asarray(targets, jnp.float32)
  new = beta * old + (1.0 - beta) * fixed / jnp.sum(fixed, axis=-1, keepdims=True)
  # 1 - <t, p> > 0: t sums to at most 1 and every p_k <= 1 - 1e-4.
  regulariser = jnp.log1p(-jnp.sum(new * probs, axis=-1))
  losses = _utils.mask(_utils.cross_entropy(logits, labels) + lam * regulariser, where)
  if not return_aux:
    return losses
  if where is not None:
    new = jnp.where(where[..., None], new, old)
  return losses, {"example_state": {"targets": new}}


def elr_init(num_classes: int) -> dict[str, np.ndarray]:
  """Initial per-example state of ELR: each example's target row, zeros (the loss updates it every call)."""
  return {"targets": np.zeros(num_classes, np.float32)}


# ELR updates its own rows (returned as aux["example_state"]), so it needs no refresh.
TRAINING = {"early_learning_regularization": protocol.Training(example_state=elr_init)}


_SR_CLAMP = 1e-7  # floor on the probabilities inside the p-norm, as the official pNorm


def sparse_regularization(
  logits: ArrayLike,
  labels: ArrayLike,
  *,
  tau: float = 0.5,
  p: float = 0.1,
  lam: float = 1.2,
  rho: float = 1.03,
  freq: int = 1,
  epoch: Optional[ArrayLike] = None,
  where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""CE with sparse regularisation (SR; Zhou et al., ICCV 2021).

  .. math:: u = \frac{z}{\tau \max(\|z\|_2, 10^{-12})},\quad \mathcal{L} = \mathrm{CE}(u, y) +
     \lambda_e \sum_k \max(\mathrm{softmax}(u)_k, 10^{-7})^p,\quad
     \lambda_e = \lambda \rho^{\lfloor e / \text{freq} \rfloor}.

  L2-normalising the logits and dividing by τ bounds them (restricting the output to a sphere), and the
  :math:`\ell_p` (p < 1) term pushes the prediction towards one-hot; λ grows with the epoch e so the
  output becomes sparser (more "symmetric", hence noise tolerant) as training proceeds. Gradient: CE's
  through the normalisation (only the direction of z is trained) plus a push away from mixed
  predictions.

  ``epoch`` is the number of epochs completed (the training loop passes it): the official loop multiplies
  λ by ρ after every ``freq`` epochs. Without ``epoch`` the call is a ValueError unless ρ = 1 (no
  schedule): a growing weight frozen at its first value would silently be another method; pass
  ``epoch=0`` for the first epoch's loss. Official parameters (τ, p, λ, ρ, freq): CIFAR-10
  (0.5, 0.1, 1.2, 1.03, 1) (defaults); CIFAR-100 (0.5, 0.01, λ, 1.02, 1) with λ = 10 for asymmetric and
  4 for symmetric noise (``main.py`` overrides the config's 10); MNIST (0.1, 0.1, 4, 2, 5), where the
  official code also skips the normalisation (not offered here). The base loss is CE (the paper also
  pairs SR with GCE and FL; not implemented).

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids or [..., K] one-hot/soft labels.
    tau: temperature, > 0.
    p: exponent of the p-norm, in (0, 1].
    lam: initial weight λ of the regulariser, >= 0.
    rho: growth factor of λ, >= 1.
    freq: epochs between growth steps, a Python int >= 1.
    epoch: epochs completed (int scalar, may be traced); may be None only when ``rho == 1``.
    where: optional bool [...]; False examples get loss 0 and zero gradient.

  Returns:
    Per-example losses [...] (float32).

  References:
    Zhou et al., `Learning with Noisy Labels via Sparse Regularization
    <https://arxiv.org/abs/2108.00192>`_, ICCV 2021; code ``hitcszx/lnl_sr``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model
    >>> print(rl.sparse_regularization(logits, labels, tau=0.5, p=0.1, lam=1.2, rho=1.03, epoch=0))
    [4.423  4.3126 5.6845]
    >>> print(rl.sparse_regularization(logits, labels, tau=0.5, p=0.1, lam=1.2, rho=1.03, epoch=10))
    [5.8057 5.6846 7.0759]
  """
  _utils.check_range("tau", tau, 0.0, lo_open=True)
  _utils.check_range("p", p, 0.0, 1.0, lo_open=True)
  _utils.check_range("lam", lam, 0.0)
  _utils.check_range("rho", rho, 1.0)
  _utils.check_int("freq", freq, 1)
  if epoch is None and not (_utils.is_concrete(rho) and rho == 1):
    raise ValueError(
      f"sparse_regularization: the regulariser weight grows with the epoch (lam * rho ** (epoch // freq), "
      f"rho={rho!r}): pass epoch= (epochs completed, an int scalar that may be traced; 0 in the first epoch), "
      "or rho=1.0 for a constant weight"
    )
  logits, labels, where = _utils.prepare(logits, labels, where)
  squares = jnp.sum(jnp.square(logits), axis=-1, keepdims=True)
  # max(||z||, 1e-12) as F.normalize, with the floor inside the sqrt (finite gradient at z = 0).
  scaled = logits / (jnp.sqrt(jnp.maximum(squares, 1e-24)) * tau)
  probs = jnp.maximum(jax.nn.softmax(scaled, axis=-1), _SR_CLAMP)
  sparsity = jnp.sum(jnp.power(probs, p), axis=-1)
  steps = 0 if epoch is None else jnp.asarray(epoch) // freq  # None only without a schedule (rho = 1)
  # rho^steps as exp(steps log rho) with log rho taken in float64 when rho is concrete: float32(1.03)^50
  # would be off by 1.4e-6 relative.
  log_rho = math.log(rho) if _utils.is_concrete(rho) else jnp.log(rho)
  weight = lam * jnp.exp(jnp.asarray(steps, jnp.float32) * log_rho)
  return _utils.mask(_utils.cross_entropy(scaled, labels) + weight * sparsity, where)
