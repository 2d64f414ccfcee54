"""Clothing1M (Xiao et al., CVPR 2015): 1M clothing images from shopping sites with noisy labels (~38%
noise) in 14 classes, plus clean 14k validation and 10k test images.

`noisy_label_kv.txt` lists 1,037,497 images, some of which are also in the clean validation and test sets;
the standard training set (DivideMix, ELR, ...) is the 1M keys of `noisy_train_key_list.txt`. Make the
`path label` lists once, in DIR:
  awk 'NR==FNR {t[$1]; next} $1 in t' noisy_train_key_list.txt noisy_label_kv.txt > noisy_train.txt
  awk 'NR==FNR {t[$1]; next} $1 in t' clean_test_key_list.txt clean_label_kv.txt > clean_test.txt
  python -m experiments.train --config=configs/clothing1m.py --workdir=runs/clothing1m \
      --config.data.path=DIR --config.data.train_list=DIR/noisy_train.txt --config.data.test_list=DIR/clean_test.txt \
      --config.init_from=RESNET50_IMAGENET.msgpack

Protocol of the loss-correction line of work (Patrini et al. 2017; also GCE's and ELR's): ResNet-50
pre-trained on ImageNet, SGD momentum 0.9, weight decay 1e-3, batch 64, lr 0.002 for 5 epochs then 0.0002
for 5, 224×224 images. The ImageNet weights are not shipped: convert them to the msgpack format of
docs/CHECKPOINTS.md (the head is re-initialised for 14 classes). The training set does not fit in memory
decoded (150 GB at 224 px): `input='auto'` streams it, each process reading its rows of every batch.
"""

from configs import _web


def get_config():
  c = _web.resnet50_on_lists(num_classes=14, num_epochs=10)
  c.batch_size = 64
  c.learning_rate = 0.002
  c.nesterov = False
  c.weight_decay = 1e-3
  c.schedule = "step"
  c.lr_boundaries = (5,)
  c.lr_decay = 0.1
  return c
