"""SVHN (TFDS `svhn_cropped`), ResNet-20; shift-only augmentation (digits must not be mirrored)."""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("svhn_cropped", num_epochs=60)
  c.learning_rate = 0.05
  return c
