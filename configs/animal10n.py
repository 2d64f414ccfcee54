"""ANIMAL-10N (Song, Kim & Lee, "SELFIE", ICML 2019): 50,000 training and 5,000 test web images of 10
animal classes in 5 confusable pairs, 64×64, with ~8% real label noise (the test labels are clean).

The images come as `training/<label>_<id>.jpg` and `testing/<label>_<id>.jpg`; the label is in the file
name, so make the two list files once (in DIR, the unpacked dataset):
  cd DIR && for s in training testing; do ls $s | awk -F_ -v s=$s '{print s"/"$0, $1}' > $s.txt; done
  python -m experiments.train --config=configs/animal10n.py --workdir=runs/animal10n \\
      --config.data.path=DIR --config.data.train_list=DIR/training.txt --config.data.test_list=DIR/testing.txt

Protocol of SELFIE: 100 epochs, batch 128, SGD momentum 0.9, lr 0.1 divided by 5 at epochs 50 and 75,
weight decay 5e-4, random crop + flip. SELFIE trains a VGG-19 with BatchNorm, which this project does not
have: PreAct ResNet-18 (CIFAR stem, suited to 64 px) instead. The 50k images fit in memory (0.6 GB), so
`input='auto'` keeps them there.
"""

from configs import _cifar


def get_config():
  c = _cifar.cifar_like("image_list", model="preact_resnet18", num_epochs=100)
  c.data.image_size = 64
  c.noise.kind = "none"  # the labels on disk are the noisy ones
  c.noise.rate = 0.0
  c.schedule = "step"
  c.lr_boundaries = (50, 75)
  c.lr_decay = 0.2
  return c
