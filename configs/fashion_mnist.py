"""Fashion-MNIST (TFDS `fashion_mnist`), small CNN; the BCE-clipping paper's first benchmark.

Asymmetric noise uses our documented map (experiments/noise.py): there is no agreed one for this dataset.
"""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("fashion_mnist", model="small_cnn", num_epochs=50)
  c.learning_rate = 0.05
  c.weight_decay = 1e-4
  return c
