"""Imagewang (TFDS `imagewang`, 160px config): the closest TFDS has to Imagewoof.

Imagewang's train split holds all of Imagenette's training images plus 10% of Imagewoof's (20 classes),
and its validation split, our test set, is Imagewoof only: the dog breeds are the hard, scarce classes.
Images are centre-cropped and resized to 64×64 on load; PreAct ResNet-18.
"""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("imagewang", model="preact_resnet18", num_epochs=80)
  c.data.tfds_config = "160px"
  c.data.image_size = 64
  c.batch_size = 64
  c.learning_rate = 0.05
  return c
