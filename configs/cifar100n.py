"""CIFAR-100N (TFDS `cifar100_n`): real human label noise, `noise_label` (40.2% noisy, Wei et al. 2022)."""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("cifar100_n", model="preact_resnet18", num_epochs=100)
  c.noise.kind = "real"
  c.noise.rate = 0.0
  c.data.real_label_key = "noise_label"
  c.learning_rate = 0.02
  return c
