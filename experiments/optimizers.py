"""Optimizers and learning-rate schedules of the papers, built from the config with optax."""
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def validate(config) -> None:
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer={config.optimizer!r} is unknown; valid choices: {OPTIMIZERS}")
  if config.schedule not in SCHEDULES:
    raise ValueError(f"schedule={config.schedule!r} is unknown; valid choices: {SCHEDULES}")
  for key in ("learning_rate", "weight_decay", "grad_clip_norm", "warmup_epochs"):
    if config[key] < 0:
      raise ValueError(f"{key}={config[key]!r} is out of range; valid range is >= 0")
  if not 0 <= config.momentum < 1:
    raise ValueError(f"momentum={config.momentum!r} is out of range; valid range is [0, 1)")
  if config.schedule == "step":
    bounds = list(config.lr_boundaries or ())
    if not bounds or any(not 0 < b < config.num_epochs for b in bounds):
      raise ValueError(f"lr_boundaries={config.lr_boundaries!r} must be a non-empty list of epochs in "
                       f"(0, num_epochs={config.num_epochs}) for schedule='step'")


def learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  total = config.num_epochs * steps_per_epoch
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.schedule == "constant":
    main = optax.constant_schedule(config.learning_rate)
  elif config.schedule == "cosine":
    main = optax.cosine_decay_schedule(config.learning_rate, max(total - warmup, 1))
  else:  # 'step': ÷(1/lr_decay) at each boundary epoch, counted from the start of training
    main = optax.piecewise_constant_schedule(
        config.learning_rate,
        {int(b * steps_per_epoch) - warmup: config.lr_decay for b in config.lr_boundaries})
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), main], [warmup])


def create(config, steps_per_epoch: int) -> optax.GradientTransformation:
  lr = learning_rate_fn(config, steps_per_epoch)
  parts = []
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
