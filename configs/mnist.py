"""MNIST (TFDS `mnist`), small CNN. Prepare once: tfds build mnist --file_format=array_record."""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("mnist", model="small_cnn", num_epochs=50)
  c.learning_rate = 0.05
  c.weight_decay = 1e-4
  return c
