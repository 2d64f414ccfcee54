"""CIFAR-10N (TFDS `cifar10_n`): real human label noise (Wei et al., ICLR 2022).

`real_label_key` picks the label set: aggre_label (9.0% noise), random_label1..3 (~17-18%), worse_label
(40.2%); the noise rates are those published with the dataset. PreAct ResNet-18 as in the CIFAR-N benchmark.
"""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("cifar10_n", model="preact_resnet18", num_epochs=100)
  c.noise.kind = "real"
  c.noise.rate = 0.0
  c.data.real_label_key = "worse_label"
  c.learning_rate = 0.02
  return c
