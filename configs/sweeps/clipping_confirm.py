"""Confirmation of the clipping statistics on a protocol they were not chosen on: another model (small_cnn),
noise kinds and rates outside the tuning grid (pair flip, uniform, other rates), 2 seeds.

  python -m experiments.sweep --config=configs/sweeps/clipping_confirm.py --workdir=runs/clipping_confirm
"""
from configs import digits
from configs.sweeps import _grid as g
from configs.sweeps import clipping_adaptive


def get_config():
  base = digits.get_config()
  base.model = "small_cnn"
  base.num_epochs = 30
  noises = (g.noise("symmetric", 0.0, 0.5) + g.noise("pairflip", 0.3) + g.noise("uniform", 0.3)
            + g.noise("asymmetric", 0.3))
  return g.sweep(base, clipping_adaptive.baselines(warmup=5) + clipping_adaptive.ROUND_2, noises, num_seeds=2)
