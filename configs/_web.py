"""Shared recipe of the real-noise web datasets read from list files: 224 px, ImageNet-stem ResNet-50, SGD."""

from configs import default


def resnet50_on_lists(num_classes: int, num_epochs: int):
  c = default.get_config()
  c.data.name = "image_list"  # data_path, train_list and test_list come from the command line
  c.data.image_size = 224
  c.data.num_classes = num_classes
  c.model = "imagenet_resnet50"
  c.noise.kind = "none"  # real noise: the labels on disk are the noisy ones
  c.noise.rate = 0.0
  c.num_epochs = num_epochs
  c.optimizer = "sgd"
  c.momentum = 0.9
  c.steps_per_call = 10
  return c
