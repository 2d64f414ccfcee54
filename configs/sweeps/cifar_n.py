"""Real human label noise: CIFAR-10N (worse_label, 40.2% noisy) with the field's baselines.
Other label sets: --config.base.data.real_label_key=aggre_label|random_label1; CIFAR-100N:
--config.base.data.name=cifar100_n --config.base.data.real_label_key=noise_label. Needs a GPU/TPU and
cifar10_n prepared (its builder needs the CIFAR-N label files downloaded by hand once).
"""

from configs import cifar10n
from configs.sweeps import _grid as g


def get_config():
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    *[g.loss(f"TCE α={a:g}", "tamed_cross_entropy", alpha=a) for a in (1.0, 2.0)],
    *g.robust_baselines(),
  ]
  c = g.sweep(cifar10n.get_config(), losses, [{"kind": "real", "rate": 0.0}], num_seeds=3)
  c.group_noise = False
  return c
