"""Protocol of Zhang & Sabuncu 2018 (GCE / truncated Lq) reference code, CIFAR-10.

ResNet-34, SGD momentum 0.9, lr 0.01, wd 1e-4, batch 128, 120 epochs, lr ÷10 at 40 and 80; truncated Lq
(q=0.7, k=0.5) with pruning weights recomputed every 10 epochs from epoch 40.
Targets: the paper's CIFAR-10 table (uniform noise η ∈ {0.2, 0.4, 0.6, 0.8}, CE vs Lq vs truncated Lq);
not copied here because we could not check the numbers against the paper text.
"""

from configs import _cifar, default


def get_config():
  c = _cifar.cifar_like("cifar10", model="resnet34", num_epochs=120)
  c.learning_rate = 0.01
  c.nesterov = False
  c.weight_decay = 1e-4
  c.schedule = "step"
  c.lr_boundaries = (40, 80)
  c.lr_decay = 0.1
  c.loss = default.loss_config(
    "truncated_generalized_cross_entropy", q=0.7, k=0.5, prune_start_epoch=40, prune_every_epochs=10
  )
  c.noise.kind = "uniform"
  c.noise.rate = 0.4
  return c
