"""CIFAR-10 (TFDS `cifar10`), ResNet-20, 200 epochs cosine, crop+flip augmentation on device."""

from configs import _cifar


def get_config():
  return _cifar.cifar_like("cifar10")
