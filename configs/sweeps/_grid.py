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
  c.only_losses = ""  # comma-separated loss labels to run (default: all)
  c.only_noise = ""  # comma-separated 'kind:rate' to run, e.g. 'symmetric:0.4' ('symmetric:0.40' is the same)
  # The noise settings of a loss still to train run as replicas of one program (fewer, larger runs); either
  # way a finished (loss, setting, seed) replica is reused when the grid grows (experiments/sweep.py).
  c.group_noise = True
  c.base_overrides = {}  # applied to every cell (e.g. {'num_epochs': 2} for a smoke test)
  c.rerun_changed = False  # a run dir holding another config: False = error; True = move aside, rerun
  return c


def dynamic_clipping_rows() -> list[dict]:
  """BCE and CE with dynamic clipping after 5 unclipped warm-up epochs: the library default statistic (a
  two-component mixture, separation 4; docs/RESULTS.md, clipping ablation) and the previous default (the 0.9
  quantile). Neither is the paper's statistic (unknown)."""
  bce, ce = "binary_cross_entropy_dynamic_clipping", "clipped_cross_entropy"
  gmm = dict(statistic="gmm", num_std=4.0, warmup_epochs=5)
  q90 = dict(statistic="quantile", quantile=0.9, warmup_epochs=5)
  return [
    loss("BCE + dyn. clip (gmm wu5)", bce, **gmm),
    loss("CE + dyn. clip (gmm wu5)", ce, **gmm),
    loss("BCE + dyn. clip (q0.9 wu5)", bce, **q90),
    loss("CE + dyn. clip (q0.9 wu5)", ce, **q90),
  ]


def robust_baselines(prune_start_epoch: int = 40, prune_every_epochs: int = 10) -> list[dict]:
  """The field's standard baselines, with their papers' defaults (truncated Lq's pruning schedule is the
  reference code's CIFAR-10 one; pass a shorter one for short runs)."""
  return [
    loss("GCE q=0.7", "generalized_cross_entropy", q=0.7),
    loss(
      "truncated Lq",
      "truncated_generalized_cross_entropy",
      q=0.7,
      k=0.5,
      prune_start_epoch=prune_start_epoch,
      prune_every_epochs=prune_every_epochs,
    ),
    loss("SCE", "symmetric_cross_entropy", alpha=0.1, beta=1.0),
    loss("NCE+RCE", "active_passive_loss", active="nce", passive="rce", alpha=1.0, beta=1.0),
    loss("MAE", "mean_absolute_error"),
    loss("focal γ=0.5", "focal_loss", gamma=0.5),
    loss("bootstrap soft", "bootstrapped_cross_entropy", beta=0.95, mode="soft"),
    loss("CE + grad clip", "softmax_cross_entropy", overrides={"grad_clip_norm": 1.0}),
  ]


def frontier_rows() -> list[dict]:
  """The 2020-2025 losses papers compare against, with their papers' CIFAR-10 defaults unless said:
  ANL-CE with the MNIST setting (α = β = 1, L1 1e-6, no weight decay: digits is MNIST-like), JAL-CE with its
  C10 setting (L1 5e-5 instead of weight decay), NCE+AGCE, CE_ε+MAE (symmetric-noise setting), LDR-KL,
  JS (π₁ = 0.7, C10 sym-40), Taylor-CE (order 2), LogitClip (τ = 1), NLS (r = -0.2, no warm-up), PHuber-CE
  (τ = 2), ELR (β = 0.7, λ = 3) and SR (C10: τ = 0.5, p = 0.1, λ₀ = 1.2, ρ = 1.03)."""
  l1 = lambda delta: {"l1_weight_decay": delta, "weight_decay": 0.0}
  return [
    loss("ANL-CE", "active_negative_loss", alpha=1.0, beta=1.0, overrides=l1(1e-6)),
    loss("NCE+AGCE", "nce_asymmetric_loss", passive="agce", alpha=1.0, beta=4.0, a=6.0, q=1.5),
    loss("JAL-CE", "joint_asymmetric_loss", alpha=1.0, beta=1.0, a=30.0, overrides=l1(5e-5)),
    loss("CE_ε+MAE", "epsilon_softmax_cross_entropy_mae", alpha=0.01, beta=5.0, m=1e5),
    loss("LDR-KL", "ldr_kl_loss", lam=10.0),
    loss("JS π=0.7", "jensen_shannon_divergence", pi=0.7),
    loss("Taylor-CE t=2", "taylor_cross_entropy", order=2),
    loss("LogitClip τ=1", "logit_clipping", tau=1.0),
    loss("NLS r=-0.2", "softmax_cross_entropy", label_smoothing=-0.2),
    loss("PHuber-CE τ=2", "partially_huberised_cross_entropy", tau=2.0),
    loss("ELR", "early_learning_regularization", beta=0.7, lam=3.0),
    loss("SR", "sparse_regularization", tau=0.5, p=0.1, lam=1.2, rho=1.03, freq=1),
  ]


def more_frontier_rows() -> list[dict]:
  """The four losses ported later (issue 22), with their official defaults: ANL-CE-ER with its only official
  setting (CIFAR-10: α = β = 5, λ = 2, L1 5e-5 instead of weight decay), ANorm alone (class defaults a = 1.5,
  p = 0.9) and NCE+ANorm (class defaults α = β = 1, a = 2, p = 0.7), PHuber-GCE (q = 0.7, τ = 10) and GJS over
  M = 2 views (π = (0.9, 0.05, 0.05), the C10 symmetric-40 % setting). GJS needs augmented views, and digits
  has no augmentation by default: its row trains with random crops (zero padding 1 px), so 'CE + crop' is
  the control that separates the augmentation's effect from the loss's."""
  l1 = {"l1_weight_decay": 5e-5, "weight_decay": 0.0}
  crop = {"data": {"augment": "crop"}}
  return [
    loss("ANL-CE-ER", "active_negative_loss_entropy_regularized", alpha=5.0, beta=5.0, lam=2.0, overrides=l1),
    loss("ANorm", "asymmetric_norm_loss", a=1.5, p=0.9),
    loss("NCE+ANorm", "nce_asymmetric_loss", passive="anorm", alpha=1.0, beta=1.0, a=2.0, q=0.7),
    loss("PHuber-GCE τ=10", "partially_huberised_generalized_cross_entropy", q=0.7, tau=10.0),
    loss("CE + crop", "softmax_cross_entropy", overrides=crop),
    loss("GJS M=2 + crop", "generalized_jensen_shannon_divergence", js_weights=(0.9, 0.05, 0.05), overrides=crop),
  ]
