"""GCE paper (Zhang & Sabuncu 2018) protocol: CIFAR-10 uniform η ∈ {0.2, 0.4, 0.6, 0.8} and
class-dependent (asymmetric) η ∈ {0.1, 0.2, 0.3, 0.4}; CE, Lq (q=0.7), truncated Lq (k=0.5), ResNet-34.
Targets: the paper's CIFAR-10/100 tables (not copied here: we could not check the numbers against the text).
CIFAR-100: --config.base.data.name=cifar100. Needs a GPU/TPU and prepared TFDS data.
"""

from configs import gce_paper
from configs.sweeps import _grid as g


def get_config():
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("GCE q=0.7", "generalized_cross_entropy", q=0.7),
    g.loss("truncated Lq", "truncated_generalized_cross_entropy", q=0.7, k=0.5),
  ]
  noises = g.noise("uniform", 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.1, 0.2, 0.3, 0.4)
  c = g.sweep(gce_paper.get_config(), losses, noises, num_seeds=3)
  c.group_noise = False
  return c
