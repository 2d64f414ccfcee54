"""The APL/ALFs benchmark protocol on CIFAR-100: ResNet-34, 200 epochs, SGD lr 0.1, weight decay 1e-5, cosine,
batch 128, gradient norm clipped at 5; each loss with its paper's CIFAR-100 hyperparameters. Published
targets (ε-softmax paper, Table 2, last epoch, sym 0.4 / 0.6, asym 0.3 / 0.4): NCE+RCE 58.48 / 46.73 / 55.86 /
41.50, ANL-CE 61.58 / 52.09 / 60.57 / 45.73, JAL-CE 64.11 / 56.73 / 64.90 / 56.17
(../shared/frontier_losses.md). Needs a GPU/TPU; not run here.
  python -m experiments.sweep --config=configs/sweeps/apl_benchmark_c100.py --workdir=runs/apl_benchmark_c100
"""

from configs.sweeps import _grid as g
from configs.sweeps import apl_benchmark


def get_config():
  l1 = lambda delta: {"l1_weight_decay": delta, "weight_decay": 0.0}
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("NCE+RCE", "active_passive_loss", active="nce", passive="rce", alpha=10.0, beta=0.1),
    g.loss("NCE+AGCE", "nce_asymmetric_loss", passive="agce", alpha=10.0, beta=0.1, a=1.8, q=3.0),
    g.loss("ANL-CE", "active_negative_loss", alpha=10.0, beta=1.0, overrides=l1(5e-7)),
    g.loss("JAL-CE", "joint_asymmetric_loss", alpha=5.0, beta=1.0, a=20.0, overrides=l1(5e-6)),
    g.loss("LDR-KL", "ldr_kl_loss", lam=1.0),
  ]
  noises = g.noise("symmetric", 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.1, 0.2, 0.3, 0.4)
  return g.sweep(apl_benchmark.base("cifar100", "resnet34", 200, 0.1, 1e-5), losses, noises, num_seeds=3)
