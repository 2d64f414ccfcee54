"""Embedded default: scikit-learn's bundled digits (8×8, 10 classes, 1257 train / 540 test), no download.

Trains in seconds on 2 CPU cores; the README's main sweep (configs/sweeps/digits.py) is built on it.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "digits"
  c.model = "mlp"
  c.num_epochs = 40
  c.batch_size = 64
  c.learning_rate = 0.05
  c.weight_decay = 5e-4
  c.schedule = "cosine"
  c.noise.kind = "symmetric"
  c.noise.rate = 0.4
  c.steps_per_call = 0  # whole epoch per compiled call: an epoch is 19 tiny steps
  return c
