"""Confirmation of the clipping statistic on a protocol it was not chosen on: another optimiser (Adam, lr 1e-3,
no weight decay), batch size 32, 30 epochs, and noise kinds and rates outside the tuning grid (pair flip,
uniform, other rates), 2 seeds. (A convolutional model was the first choice; small_cnn took 3.7 minutes for
3 epochs of 2 seeds on our 2 CPU cores, too slow for this grid here — a GPU run of it is the natural next check.)

  python -m experiments.sweep --config=configs/sweeps/clipping_confirm.py --workdir=runs/clipping_confirm
"""

from configs import digits
from configs.sweeps import _grid as g
from configs.sweeps import clipping_adaptive


def get_config():
  base = digits.get_config()
  base.optimizer = "adam"
  base.learning_rate = 1e-3
  base.weight_decay = 0.0
  base.batch_size = 32
  base.num_epochs = 30
  noises = (
    g.noise("symmetric", 0.0, 0.5) + g.noise("pairflip", 0.3) + g.noise("uniform", 0.3) + g.noise("asymmetric", 0.3)
  )
  return g.sweep(base, clipping_adaptive.baselines(warmup=5) + clipping_adaptive.CHOSEN, noises, num_seeds=2)
