"""TCE paper, Table 2 (Martinez & Stiefelhagen 2018): CIFAR-10+ / MNIST / SVHN, ResNet-20, symmetric
η ∈ {0, 0.4, 0.8}, CE vs TCE α ∈ {0.5, 1, 1.5, 2} (+ MAE, GCE as extra baselines), 5 runs.
Targets (top-1 %, CIFAR10+): CE 92.10 / 83.73 / 63.59, TCE α=2 91.82 / 88.40 / 72.95 at η = 0 / 0.4 / 0.8.
Other datasets: --config.base.data.name=mnist (or svhn_cropped). Needs a GPU/TPU and prepared TFDS data.
"""

from configs import tce_paper
from configs.sweeps import _grid as g


def get_config():
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    *[g.loss(f"TCE α={a:g}", "tamed_cross_entropy", alpha=a) for a in (0.5, 1.0, 1.5, 2.0)],
    g.loss("MAE", "mean_absolute_error"),
    g.loss("GCE q=0.7", "generalized_cross_entropy", q=0.7),
  ]
  c = g.sweep(tce_paper.get_config(), losses, g.noise("symmetric", 0.0, 0.4, 0.8), num_seeds=5)
  c.group_noise = False  # ResNet-20 on 45k images: one noise setting (5 vmapped seeds) per run
  return c
