"""The APL/ALFs benchmark protocol on which ANL, the asymmetric losses, ε-softmax and JAL report (CIFAR-10):
8-layer CNN, 120 epochs, SGD lr 0.01 (momentum 0.9), weight decay 1e-4, cosine, batch 128, gradient norm
clipped at 5; symmetric η ∈ {0.2, 0.4, 0.6, 0.8}, asymmetric η ∈ {0.1, 0.2, 0.3, 0.4}; each loss with its
paper's CIFAR-10 hyperparameters. CIFAR-100 (ResNet-34, 200 epochs, lr 0.1, wd 1e-5): `apl_benchmark_c100.py`.

Published numbers this targets (ε-softmax paper, Table 2, last epoch, CIFAR-10 symmetric 0.4 / 0.8, asymmetric
0.2 / 0.4; ../shared/frontier_losses.md): CE 58.05 / 19.74 / 83.05 / 73.85, NCE+RCE 85.89 / 54.99 / 88.62 /
77.94, ANL-CE 87.16 / 62.28 / 89.09 / 77.99, JAL-CE 87.53 / 65.43 / 89.11 / 79.54. Needs a GPU/TPU and cifar10
prepared as ArrayRecord; not run on this project's CPU machine.
  python -m experiments.sweep --config=configs/sweeps/apl_benchmark.py --workdir=runs/apl_benchmark
"""

from configs import _cifar
from configs.sweeps import _grid as g


def base(dataset="cifar10", model="cnn8", num_epochs=120, learning_rate=0.01, weight_decay=1e-4):
  c = _cifar.cifar_like(dataset, model=model, num_epochs=num_epochs)
  c.learning_rate = learning_rate
  c.nesterov = False
  c.weight_decay = weight_decay
  c.grad_clip_norm = 5.0
  return c


def get_config():
  l1 = lambda delta: {"l1_weight_decay": delta, "weight_decay": 0.0}
  losses = [
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("GCE", "generalized_cross_entropy", q=0.7),
    g.loss("SCE", "symmetric_cross_entropy", alpha=0.1, beta=1.0),
    g.loss("NCE+RCE", "active_passive_loss", active="nce", passive="rce", alpha=1.0, beta=1.0),
    g.loss("NCE+AGCE", "nce_asymmetric_loss", passive="agce", alpha=1.0, beta=4.0, a=6.0, q=1.5),
    g.loss("ANL-CE", "active_negative_loss", alpha=5.0, beta=5.0, overrides=l1(5e-5)),
    g.loss("CE_ε+MAE", "epsilon_softmax_cross_entropy_mae", alpha=0.01, beta=5.0, m=1e5),
    g.loss("JAL-CE", "joint_asymmetric_loss", alpha=1.0, beta=1.0, a=30.0, overrides=l1(5e-5)),
    g.loss("LDR-KL", "ldr_kl_loss", lam=10.0),
    g.loss("TCE α=2", "tamed_cross_entropy", alpha=2.0),
  ]
  noises = g.noise("symmetric", 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.1, 0.2, 0.3, 0.4)
  return g.sweep(base(), losses, noises, num_seeds=3)
