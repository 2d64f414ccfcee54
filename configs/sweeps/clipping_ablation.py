"""Dynamic-clipping ablation on digits: which mini-batch statistic, per example or per element, which base
loss, from the first step or after a warm-up. Hurtik et al. 2022 do not give their statistic in any text we
could obtain, so this is our own study; unclipped BCE and CE are the references.

  python -m experiments.sweep --config=configs/sweeps/clipping_ablation.py --workdir=runs/clipping_ablation
"""

from configs import digits
from configs.sweeps import _grid as g

BCE = "binary_cross_entropy_dynamic_clipping"
# Clipping from the first step: these rows ran when that was the losses' default (it is now a 5-epoch warm-up),
# so they say it, to stay the runs docs/RESULTS.md reports.
FIRST_STEP = {"warmup_epochs": 0}


def get_config():
  losses = [
    g.loss("BCE (no clip)", "sigmoid_binary_cross_entropy"),
    g.loss("CE (no clip)", "softmax_cross_entropy"),
    g.loss("BCE clip mean", BCE, statistic="mean", **FIRST_STEP),
    g.loss("BCE clip median", BCE, statistic="median", **FIRST_STEP),
    *[
      g.loss(f"BCE clip q{q:g}", BCE, statistic="quantile", quantile=q, **FIRST_STEP)
      for q in (0.5, 0.7, 0.8, 0.9, 0.95)
    ],
    *[g.loss(f"BCE clip mean+{k:g}std", BCE, statistic="mean_std", num_std=k, **FIRST_STEP) for k in (0.5, 1.0, 2.0)],
    g.loss("BCE clip mean per-element", BCE, statistic="mean", per_element=True, **FIRST_STEP),
    g.loss("BCE clip q0.9 per-element", BCE, statistic="quantile", quantile=0.9, per_element=True, **FIRST_STEP),
    g.loss("CE clip mean", "clipped_cross_entropy", statistic="mean", **FIRST_STEP),
    g.loss("CE clip q0.9", "clipped_cross_entropy", statistic="quantile", quantile=0.9, **FIRST_STEP),
    g.loss("focal clip mean", "clipped_focal_loss", statistic="mean", **FIRST_STEP),
    g.loss("BCE clip mean warm-up 5", BCE, statistic="mean", warmup_epochs=5),
    g.loss("BCE clip q0.9 warm-up 5", BCE, statistic="quantile", quantile=0.9, warmup_epochs=5),
  ]
  noises = g.noise("symmetric", 0.0, 0.4, 0.6) + g.noise("asymmetric", 0.4)
  return g.sweep(digits.get_config(), losses, noises, num_seeds=3)
