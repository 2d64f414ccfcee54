"""Which clipping statistic for *CE and focal* dynamic clipping (`clipped_cross_entropy`, `clipped_focal_loss`).

The clipping ablation (clipping_adaptive.py / clipping_confirm.py) chose its statistic for BCE only; CE and
focal shared it without being ablated. This sweep ablates them with the same rule (docs/RESULTS.md): a
statistic qualifies if it is never more than 0.5 below its unclipped loss in any column of the tuning grid
(clean included); among those, the best mean over the noisy columns wins, if the confirmation protocol agrees.

  python -m experiments.sweep --config=configs/sweeps/clipping_ce.py --workdir=runs/clipping_ce
  python -m experiments.sweep --config=configs/sweeps/clipping_ce.py:confirm --workdir=runs/clipping_ce_confirm
"""

from configs import digits
from configs.sweeps import _grid as g
from configs.sweeps import clipping_confirm

CE, FOCAL = "clipped_cross_entropy", "clipped_focal_loss"
STATISTICS = {
  "gmm sep4": dict(statistic="gmm", num_std=4.0),
  "gmm sep3": dict(statistic="gmm", num_std=3.0),
  "q0.9": dict(statistic="quantile", quantile=0.9),
  "q0.8": dict(statistic="quantile", quantile=0.8),
  "mad k=3": dict(statistic="mad", num_std=3.0),
}
FOCAL_STATISTICS = ("gmm sep4", "gmm sep3", "q0.9")


def rows(warmup: int = 5):
  return [
    g.loss("CE", "softmax_cross_entropy"),
    *[g.loss(f"CE clip {s} wu{warmup}", CE, warmup_epochs=warmup, **STATISTICS[s]) for s in STATISTICS],
    g.loss("focal γ=0.5", "focal_loss", gamma=0.5),
    *[
      g.loss(f"focal clip {s} wu{warmup}", FOCAL, gamma=0.5, warmup_epochs=warmup, **STATISTICS[s])
      for s in FOCAL_STATISTICS
    ],
  ]


def get_config(protocol: str = "tune"):
  if protocol == "confirm":  # clipping_confirm.py's protocol and noise settings
    confirm = clipping_confirm.get_config()
    return g.sweep(confirm.base, rows(), list(confirm.noise), num_seeds=confirm.num_seeds)
  if protocol != "tune":
    raise ValueError(f"protocol={protocol!r} is unknown; valid choices: 'tune', 'confirm'")
  noises = g.noise("symmetric", 0.0, 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.2, 0.4)
  return g.sweep(digits.get_config(), rows(), noises, num_seeds=3)
