"""Shared CIFAR-style recipe (ResNet, SGD+Nesterov, cosine): the base of the image-dataset configs."""

from configs import default


def cifar_like(dataset: str, model: str = "resnet20", num_epochs: int = 200):
  c = default.get_config()
  c.data.name = dataset
  c.model = model
  c.num_epochs = num_epochs
  c.batch_size = 128
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4
  c.schedule = "cosine"
  c.steps_per_call = 50
  return c
