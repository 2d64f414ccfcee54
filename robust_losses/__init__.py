"""robust_losses: noise-robust classification losses in JAX.

Every loss maps logits [..., K] and integer class ids [...] or one-hot/soft labels [..., K] to per-example
losses [...], computed in float32, with an optional per-example `where` mask. Use the functions directly or through the
registry: `robust_losses.get(name, **hparams)` (see `robust_losses.names()`).

ICCE (Li et al., PRCV 2021) is not implemented: its formula is not available (see `tamed`'s docstring).
"""

from robust_losses.asymmetric import (
  asymmetric_exponential_loss,
  asymmetric_generalized_cross_entropy,
  asymmetric_mean_squared_error,
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
from robust_losses.divergence import jensen_shannon_divergence, ldr_kl_loss
from robust_losses.epsilon_softmax import epsilon_softmax_cross_entropy, epsilon_softmax_cross_entropy_mae
from robust_losses.generalized import (
  generalized_cross_entropy,
  truncated_generalized_cross_entropy,
  truncated_lq_prune_weights,
)
from robust_losses.logitclip import clip_logits, logit_clipping
from robust_losses.negative import (
  active_negative_loss,
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
from robust_losses.phuber import partially_huberised_cross_entropy
from robust_losses.registry import Loss, Training, get, hparam_types, names, required_hparams
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
  "active_passive_loss",
  "asymmetric_exponential_loss",
  "asymmetric_generalized_cross_entropy",
  "asymmetric_mean_squared_error",
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
  "required_hparams",
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
