"""TCE paper, Table 1: CIFAR-100+, ResNet-20 protocol, symmetric η ∈ {0, 0.4}, CE vs TCE.
Target (top-1 %, η = 0.4): CE 54.52, TCE α=1.5 61.07. Needs a GPU/TPU and prepared TFDS cifar100.
"""

from configs.sweeps import tce_table2


def get_config():
  c = tce_table2.get_config()
  c.base.data.name = "cifar100"
  c.noise = [n for n in c.noise if n["rate"] in (0.0, 0.4)]
  return c
