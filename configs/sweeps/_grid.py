"""Helpers to write sweep configs: a sweep is a base training config plus lists of losses and noise."""
import ml_collections


def loss(label: str, name: str, overrides: dict | None = None, **hparams) -> dict:
  """A row of the table: a registry loss with hyperparameters, and optional training-config overrides."""
  return {"label": label, "name": name, "hparams": hparams, "overrides": overrides or {}}


def noise(kind: str, *rates: float) -> list[dict]:
  return [{"kind": kind, "rate": float(r)} for r in rates]


def sweep(base, losses, noises, num_seeds: int = 3) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.base = base
  c.losses = losses
  c.noise = noises
  c.seed = 0
  c.num_seeds = num_seeds
  c.only_losses = ""     # comma-separated loss labels to run (default: all)
  c.only_noise = ""      # comma-separated 'kind:rate' to run, e.g. 'symmetric:0.4'
  c.group_noise = True   # all noise settings of a loss as replicas of one program (fewer, larger runs)
  c.base_overrides = {}  # applied to every cell (e.g. {'num_epochs': 2} for a smoke test)
  c.rerun_changed = False  # a run dir holding another config: False = error; True = move aside, rerun
  return c


def dynamic_clipping_rows() -> list[dict]:
  """BCE and CE with dynamic clipping as our ablation set them up (docs/RESULTS.md): the library default
  statistic (the 0.9 quantile) after 5 unclipped warm-up epochs. Not the paper's statistic (unknown)."""
  return [loss("BCE + dyn. clip (q0.9 wu5)", "binary_cross_entropy_dynamic_clipping", warmup_epochs=5),
          loss("CE + dyn. clip (q0.9 wu5)", "clipped_cross_entropy", warmup_epochs=5)]


def robust_baselines(prune_start_epoch: int = 40, prune_every_epochs: int = 10) -> list[dict]:
  """The field's standard baselines, with their papers' defaults (truncated Lq's pruning schedule is the
  reference code's CIFAR-10 one; pass a shorter one for short runs)."""
  return [
      loss("GCE q=0.7", "generalized_cross_entropy", q=0.7),
      loss("truncated Lq", "truncated_generalized_cross_entropy", q=0.7, k=0.5,
           prune_start_epoch=prune_start_epoch, prune_every_epochs=prune_every_epochs),
      loss("SCE", "symmetric_cross_entropy", alpha=0.1, beta=1.0),
      loss("NCE+RCE", "active_passive_loss", active="nce", passive="rce", alpha=1.0, beta=1.0),
      loss("MAE", "mean_absolute_error"),
      loss("focal γ=0.5", "focal_loss", gamma=0.5),
      loss("bootstrap soft", "bootstrapped_cross_entropy", beta=0.95, mode="soft"),
      loss("CE + grad clip", "softmax_cross_entropy", overrides={"grad_clip_norm": 1.0}),
  ]
