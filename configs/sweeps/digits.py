"""The README's main job: which loss helps at which noise, on the embedded digits data (no download).

16 losses × (symmetric η ∈ {0, .2, .4, .6, .8}, asymmetric η ∈ {.2, .4}) × 3 seeds, vmapped per cell.
  python -m experiments.sweep --config=configs/sweeps/digits.py --workdir=runs/sweep_digits
"""
from configs import digits
from configs.sweeps import _grid as g


def get_config():
  losses = [
      g.loss("CE", "softmax_cross_entropy"),
      g.loss("BCE", "sigmoid_binary_cross_entropy"),
      *g.dynamic_clipping_rows(),
      *[g.loss(f"TCE α={a:g}", "tamed_cross_entropy", alpha=a) for a in (0.5, 1.0, 1.5, 2.0)],
      # 40 epochs: truncated Lq prunes from epoch 10, every 5 (the reference's 40/10 scaled to the run).
      *g.robust_baselines(prune_start_epoch=10, prune_every_epochs=5),
  ]
  noises = g.noise("symmetric", 0.0, 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.2, 0.4)
  return g.sweep(digits.get_config(), losses, noises, num_seeds=3)
