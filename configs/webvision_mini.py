"""WebVision-mini: the first 50 classes of WebVision 1.0's Google images (Li et al. 2017; ~66k images,
~20% web label noise), tested on WebVision's validation images of those classes (2,500, clean).

Make the list files from WebVision's own (`info/train_filelist_google.txt`, `info/val_filelist.txt`, lines
`path label`) once, in DIR (the unpacked resized release), keeping labels < 50 and paths relative to DIR:
  awk '$2 < 50' info/train_filelist_google.txt > train50.txt
  awk '$2 < 50 {print "val_images_256/"$1, $2}' info/val_filelist.txt > val50.txt
  python -m experiments.train --config=configs/webvision_mini.py --workdir=runs/webvision \\
      --config.data.path=DIR --config.data.train_list=DIR/train50.txt --config.data.test_list=DIR/val50.txt

Protocol of APL (Ma et al., ICML 2020; HanxunH/Active-Passive-Losses@2d18de6
configs/webvision_mini/nce+rce.yaml), also used by ANL (NeurIPS 2023), ALFs and JAL (ICCV 2025): ResNet-50
from scratch, 250 epochs, SGD with Nesterov momentum 0.9, lr 0.4 ×0.97 after every epoch, weight decay
3e-5, batch 512, gradient norm clipped at 5, NCE+RCE α=50, β=0.1, images resized to 224×224. APL also
tests on ILSVRC2012's validation images of the 50 classes: make a list file of those to do the same. Here the
resize is a centre crop + resize on decode and the
augmentation a random crop (zero padding 28 px) + flip on device; the papers' exact augmentation is not
reproduced. Decoded, the training set is ~10 GB: `input='auto'` streams it (input_memory_gb). The
published numbers (APL's NCE+RCE, ANL-CE 67.44, NCE+AGCE 65.00 top-1) are in docs/RESULTS.md's notes.
"""

from configs import _web, default


def get_config():
  c = _web.resnet50_on_lists(num_classes=50, num_epochs=250)
  c.batch_size = 512
  c.learning_rate = 0.4
  c.nesterov = True
  c.weight_decay = 3e-5
  c.schedule = "exponential"
  c.lr_decay = 0.97
  c.grad_clip_norm = 5.0
  # APL's WebVision NCE+RCE; set loss.name (and its hyperparameters) to compare others.
  c.loss = default.loss_config("active_passive_loss", active="nce", passive="rce", alpha=50.0, beta=0.1)
  return c
