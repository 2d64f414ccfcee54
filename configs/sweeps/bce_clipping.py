"""BCE with dynamic clipping (Hurtik et al. 2022) benchmarks: Fashion-MNIST, CIFAR-10, CIFAR-100 with
symmetric noise. The paper's numbers are not reproduced here: its text and code were not obtainable, so
the clipping statistic is ours (see docs/RESULTS.md, ablation). Override --config.base.data.name=... and
--config.base.model=... per dataset (fashion_mnist: small_cnn; cifar10/100: resnet20/32).
"""

from configs import fashion_mnist
from configs.sweeps import _grid as g


def get_config():
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("BCE", "sigmoid_binary_cross_entropy"),
    *g.dynamic_clipping_rows(),
    g.loss("CE + grad clip", "softmax_cross_entropy", overrides={"grad_clip_norm": 1.0}),
  ]
  c = g.sweep(fashion_mnist.get_config(), losses, g.noise("symmetric", 0.0, 0.2, 0.4, 0.6), num_seeds=3)
  c.group_noise = False
  return c
