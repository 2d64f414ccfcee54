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
  return c


def dynamic_clipping_rows() -> list[dict]:
  """BCE and CE with dynamic clipping as our ablation set them up (docs/RESULTS.md): the library default
  statistic (the 0.9 quantile) after 5 unclipped warm-up epochs. Not the paper's statistic (unknown)."""
  warm_up = {"clip_warmup_epochs": 5}
  return [loss("BCE + dyn. clip (q0.9 wu5)", "binary_cross_entropy_dynamic_clipping", overrides=warm_up),
          loss("CE + dyn. clip (q0.9 wu5)", "clipped_cross_entropy", overrides=warm_up)]


def robust_baselines() -> list[dict]:
  """The field's standard baselines, with their papers' defaults."""
  return [
      loss("GCE q=0.7", "generalized_cross_entropy", q=0.7),
      loss("truncated Lq", "truncated_generalized_cross_entropy", q=0.7, k=0.5),
      loss("SCE", "symmetric_cross_entropy", alpha=0.1, beta=1.0),
      loss("NCE+RCE", "active_passive_loss", active="nce", passive="rce", alpha=1.0, beta=1.0),
      loss("MAE", "mean_absolute_error"),
      loss("focal γ=0.5", "focal_loss", gamma=0.5),
      loss("bootstrap soft", "bootstrapped_cross_entropy", beta=0.95, mode="soft"),
      loss("CE + grad clip", "softmax_cross_entropy", overrides={"grad_clip_norm": 1.0}),
  ]
