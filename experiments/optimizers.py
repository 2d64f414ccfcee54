"""Optimizers and learning-rate schedules of the papers, built from the config with optax."""

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "exponential")


def validate(config) -> None:
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer={config.optimizer!r} is unknown; valid choices: {OPTIMIZERS}")
  if config.schedule not in SCHEDULES:
    raise ValueError(f"schedule={config.schedule!r} is unknown; valid choices: {SCHEDULES}")
  for key in ("learning_rate", "weight_decay", "l1_weight_decay", "grad_clip_norm", "warmup_epochs"):
    if config[key] < 0:
      raise ValueError(f"{key}={config[key]!r} is out of range; valid range is >= 0")
  if not config.lr_decay > 0:
    raise ValueError(f"lr_decay={config.lr_decay!r} is out of range; valid range is > 0")
  if not 0 <= config.momentum < 1:
    raise ValueError(f"momentum={config.momentum!r} is out of range; valid range is [0, 1)")
  if config.schedule == "step":
    bounds = list(config.lr_boundaries or ())
    if not bounds or any(not 0 < b < config.num_epochs for b in bounds):
      raise ValueError(
        f"lr_boundaries={config.lr_boundaries!r} must be a non-empty list of epochs in "
        f"(0, num_epochs={config.num_epochs}) for schedule='step'"
      )


def learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  total = config.num_epochs * steps_per_epoch
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.schedule == "constant":
    main = optax.constant_schedule(config.learning_rate)
  elif config.schedule == "cosine":
    main = optax.cosine_decay_schedule(config.learning_rate, max(total - warmup, 1))
  elif config.schedule == "exponential":  # ×lr_decay after every epoch (APL's WebVision protocol: 0.97)
    main = optax.exponential_decay(
      config.learning_rate, transition_steps=steps_per_epoch, decay_rate=config.lr_decay, staircase=True
    )
  else:  # 'step': ÷(1/lr_decay) at each boundary epoch, counted from the start of training
    main = optax.piecewise_constant_schedule(
      config.learning_rate, {int(b * steps_per_epoch) - warmup: config.lr_decay for b in config.lr_boundaries}
    )
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), main], [warmup])


def add_l1_penalty(weight: float) -> optax.GradientTransformation:
  """Adds the gradient of weight * sum|theta| over all parameters: weight * sign(theta) (0 at 0, as torch's
  abs). ANL (Ye et al. 2023) and JAL (Wang et al. 2025) put this penalty inside their loss with weight decay
  0; as a transformation it applies to any loss, before gradient clipping as in their code."""

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("add_l1_penalty needs the parameters")
    return jax.tree.map(lambda g, p: g + weight * jnp.sign(p).astype(g.dtype), updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def create(config, steps_per_epoch: int) -> optax.GradientTransformation:
  lr = learning_rate_fn(config, steps_per_epoch)
  parts = []
  if config.l1_weight_decay > 0:
    parts.append(add_l1_penalty(config.l1_weight_decay))
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.optimizer == "sgd":
    # Coupled L2 weight decay, as torch.optim.SGD(weight_decay=...) in the papers' reference code.
    if config.weight_decay:
      parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.sgd(lr, momentum=config.momentum or None, nesterov=config.nesterov))
  elif config.optimizer == "adam":
    if config.weight_decay:
      parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.adam(lr))
  else:
    parts.append(optax.adamw(lr, weight_decay=config.weight_decay))
  return optax.chain(*parts)
