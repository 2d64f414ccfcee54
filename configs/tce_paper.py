"""Protocol of Martinez & Stiefelhagen 2018, "Taming the Cross Entropy Loss" (GCPR), on CIFAR-10+.

ResNet-20, SGD Nesterov 0.9, lr 0.1, batch 128, wd 1e-4, 256 epochs, lr ÷10 at 128 and 192; 5000 training
images (val_fraction 0.1, scored on their clean labels: val_labels='clean') held out as validation to pick the
epoch; shift+mirror augmentation.
Targets (top-1 %, their Table 2, CIFAR10+): CE 92.10 / 83.73 / 63.59 and TCE α=2 91.82 / 88.40 / 72.95 at
symmetric noise η = 0 / 0.4 / 0.8. Override --config.data.name=mnist|svhn_cropped for the other columns.
"""

from configs import _cifar, default


def get_config():
  c = _cifar.cifar_like("cifar10", model="resnet20", num_epochs=256)
  c.weight_decay = 1e-4
  c.schedule = "step"
  c.lr_boundaries = (128, 192)
  c.lr_decay = 0.1
  c.val_fraction = 0.1  # 5000 of CIFAR-10's 50000 training images
  c.val_labels = "clean"
  c.loss = default.loss_config("tamed_cross_entropy", alpha=2.0)
  c.noise.kind = "symmetric"
  c.noise.rate = 0.4
  return c
