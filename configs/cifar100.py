"""CIFAR-100 (TFDS `cifar100`), ResNet-32 (more classes want more capacity), 200 epochs cosine."""

from configs import _cifar


def get_config():
  return _cifar.cifar_like("cifar100", model="resnet32")
