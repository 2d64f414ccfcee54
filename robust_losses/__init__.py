"""robust_losses: noise-robust classification losses in JAX.

Every loss maps logits [..., K] and integer class ids [...] or one-hot/soft labels [..., K] to per-example
losses [...], computed in float32, with an optional per-example `where` mask. Use the functions directly or through the
registry: `robust_losses.get(name, **hparams)` (see `robust_losses.names()`); `robust_losses.register` adds your own.

Bad input, defined for every loss:

* A **negative class id marks an example to ignore**, exactly as ``where=False``: loss 0, zero gradient, and
  left out of every batch statistic (dynamic clipping, the oracle selection).
* A class id >= K is a ValueError naming it and K when the labels are concrete (an eager call). Under
  ``jax.jit`` it cannot be checked: that example's loss (and gradient) is NaN, which a training loop's
  non-finite check catches.
* An empty batch (``logits.shape[:-1]`` with a zero) gives an empty result.
* ``where`` must be per-example (broadcastable to ``logits.shape[:-1]``), not optax's per-class mask.
* Hyperparameters of the wrong type or out of range are errors naming the argument and what is valid.
* Losses with state (ELR's targets) or with a schedule that acts (a clipping warm-up, SR's growing weight)
  raise when called without the state or the ``epoch``, rather than silently computing another method.

Every derivative is available in forward and reverse mode (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``,
``jax.hessian``): the written-out derivatives of the class-id fast paths are ``jax.custom_jvp`` rules.

ICCE (Li et al., PRCV 2021) is not implemented: its formula is not available (see `tamed`'s docstring).
"""

__version__ = "0.2.0"

from robust_losses.asymmetric import (
  asymmetric_exponential_loss,
  asymmetric_generalized_cross_entropy,
  asymmetric_mean_squared_error,
  asymmetric_norm_loss,
  asymmetric_unhinged_loss,
  joint_asymmetric_loss,
  nce_asymmetric_loss,
)
from robust_losses.bitempered import bi_tempered_logistic_loss
from robust_losses.classification import (
  bootstrapped_cross_entropy,
  focal_loss,
  mean_absolute_error,
  mean_squared_error,
  sigmoid_binary_cross_entropy,
  softmax_cross_entropy,
)
from robust_losses.clipping import (
  batch_threshold,
  binary_cross_entropy_dynamic_clipping,
  class_thresholds,
  clipped_cross_entropy,
  clipped_focal_loss,
  dynamic_clipping,
  oracle_small_loss_selection,
  window_threshold,
)
from robust_losses.correction import backward_corrected_cross_entropy, forward_corrected_cross_entropy
from robust_losses.divergence import generalized_jensen_shannon_divergence, jensen_shannon_divergence, ldr_kl_loss
from robust_losses.epsilon_softmax import epsilon_softmax_cross_entropy, epsilon_softmax_cross_entropy_mae
from robust_losses.generalized import (
  generalized_cross_entropy,
  truncated_generalized_cross_entropy,
  truncated_lq_prune_weights,
)
from robust_losses.logitclip import clip_logits, logit_clipping
from robust_losses.negative import (
  active_negative_loss,
  active_negative_loss_entropy_regularized,
  normalized_negative_cross_entropy,
  normalized_negative_focal_loss,
)
from robust_losses.ogc import (
  OGCThreshold,
  OGCThresholdState,
  ogc_threshold,
  ogc_threshold_init,
  ogc_threshold_update,
  optimized_gradient_clipping,
)
from robust_losses.phuber import partially_huberised_cross_entropy, partially_huberised_generalized_cross_entropy
from robust_losses.registry import (
  Loss,
  Training,
  get,
  hparam_defaults,
  hparam_types,
  names,
  register,
  required_hparams,
)
from robust_losses.regularized import early_learning_regularization, sparse_regularization
from robust_losses.symmetric import (
  active_passive_loss,
  normalized_cross_entropy,
  normalized_focal_loss,
  normalized_generalized_cross_entropy,
  reverse_cross_entropy,
  symmetric_cross_entropy,
)
from robust_losses.tamed import tamed_cross_entropy
from robust_losses.taylor import taylor_cross_entropy
from robust_losses.windows import LossWindow, loss_window_init, loss_window_update

__all__ = [
  "active_negative_loss",
  "active_negative_loss_entropy_regularized",
  "active_passive_loss",
  "asymmetric_exponential_loss",
  "asymmetric_generalized_cross_entropy",
  "asymmetric_mean_squared_error",
  "asymmetric_norm_loss",
  "asymmetric_unhinged_loss",
  "backward_corrected_cross_entropy",
  "batch_threshold",
  "bi_tempered_logistic_loss",
  "binary_cross_entropy_dynamic_clipping",
  "bootstrapped_cross_entropy",
  "class_thresholds",
  "clip_logits",
  "clipped_cross_entropy",
  "clipped_focal_loss",
  "dynamic_clipping",
  "early_learning_regularization",
  "epsilon_softmax_cross_entropy",
  "epsilon_softmax_cross_entropy_mae",
  "focal_loss",
  "forward_corrected_cross_entropy",
  "generalized_cross_entropy",
  "generalized_jensen_shannon_divergence",
  "get",
  "hparam_types",
  "jensen_shannon_divergence",
  "joint_asymmetric_loss",
  "ldr_kl_loss",
  "logit_clipping",
  "Loss",
  "LossWindow",
  "loss_window_init",
  "loss_window_update",
  "mean_absolute_error",
  "mean_squared_error",
  "names",
  "nce_asymmetric_loss",
  "normalized_cross_entropy",
  "oracle_small_loss_selection",
  "OGCThreshold",
  "OGCThresholdState",
  "ogc_threshold",
  "ogc_threshold_init",
  "ogc_threshold_update",
  "optimized_gradient_clipping",
  "normalized_focal_loss",
  "normalized_generalized_cross_entropy",
  "normalized_negative_cross_entropy",
  "normalized_negative_focal_loss",
  "partially_huberised_cross_entropy",
  "partially_huberised_generalized_cross_entropy",
  "required_hparams",
  "hparam_defaults",
  "register",
  "reverse_cross_entropy",
  "sigmoid_binary_cross_entropy",
  "softmax_cross_entropy",
  "sparse_regularization",
  "symmetric_cross_entropy",
  "tamed_cross_entropy",
  "taylor_cross_entropy",
  "Training",
  "truncated_generalized_cross_entropy",
  "truncated_lq_prune_weights",
  "window_threshold",
]
