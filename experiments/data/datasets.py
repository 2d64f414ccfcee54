"""A dataset as the trainer sees it: labels in host memory, images behind random-access sources.

`load(config.data)` opens any dataset the same way (specs.py lists them): scikit-learn's digits and .npz
files are arrays, image folders and list files are decoded by image_files.py, TFDS datasets are read with
`tfds.data_source`. With `input='memory'` every source is decoded into host memory once (the fast path
for small data); with `input='stream'` images are decoded when a batch needs them (feeds.py), so the data
is never whole in any host's memory. Real-noise datasets (CIFAR-N, web labels, files) also give the
human/web labels as `real_noisy_labels`; `train.labels` stays the clean label where one exists.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from experiments.data import arrays, image_files, sources, statistics, tfds_data
from experiments.data.specs import SPECS, augmentation, image_size, opt, tfds_name, validate


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: uint8 images [N, H, W, C] behind a random-access source, int32 labels [N]."""

  source: object
  labels: np.ndarray

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Data:
  name: str
  num_classes: int
  train: Split  # clean labels; for web-noise data with no clean label, the noisy ones
  test: Split
  val: Split | None  # the dataset's own (clean) validation split on disk, or the held-out split (`hold_out`)
  real_noisy_labels: np.ndarray | None  # human/web labels aligned with train.labels
  mean: tuple[float, ...]  # per channel, of the training images / 255
  std: tuple[float, ...]
  crop_pad: int  # zero padding of the on-device random crop (0: no crop)
  flip: bool  # on-device random horizontal flip
  mode: str  # 'memory' (sources decoded in host memory) or 'stream'
  class_names: tuple[str, ...] = ()  # index -> name where the dataset has names (image folders)

  @property
  def image_shape(self):
    return tuple(self.train.source.shape)


def input_mode(cfg) -> str:
  """'memory' or 'stream': cfg.input, or for 'auto' streaming when the decoded training images exceed
  input_memory_gb (digits and npz are in memory anyway)."""
  if cfg.input != "auto":
    return cfg.input
  size = train_images_bytes(cfg)
  return "memory" if size is None or size <= cfg.input_memory_gb * 2**30 else "stream"


def train_images_bytes(cfg) -> int | None:
  """Decoded size of the training images, for input='auto' (None: the dataset is in memory anyway)."""
  spec = SPECS[cfg.name]
  if spec.kind == "arrays":
    return None
  size = image_size(cfg)
  if spec.kind == "files":
    if cfg.name == "image_folder":
      files = image_files.scan_image_folder(cfg.path)["train"]
    else:
      files = image_files.read_list_file(cfg.train_list, cfg.path, check_exists=False)
    n = len(files.paths)
    if not size and n:  # image_size=0: the images' own size (load checks they share it); the first one's here
      size = image_files.common_size([files.paths[:1]])
    return n * size * size * 3
  split = opt(cfg, "train_split") or spec.train_splits[0]
  return tfds_data.train_images_bytes(tfds_name(cfg), split, opt(cfg, "tfds_dir"), size)


def load(cfg, *, seed: int = 0, mode: str | None = None) -> Data:
  """Opens the dataset of data config `cfg`; `mode` ('memory'|'stream', default `input_mode(cfg)`).

  `seed` draws, when streaming, the sample of the channel statistics. The validation split of `val_fraction`
  is taken later, after the noise is applied (`hold_out`).
  """
  validate(cfg)
  mode = mode or input_mode(cfg)
  if cfg.input == "auto" and mode == "stream" and jax.process_index() == 0:
    print(f"input: streaming {cfg.name} (decoded training images exceed input_memory_gb={cfg.input_memory_gb})")
  spec = SPECS[cfg.name]
  num_classes = opt(cfg, "num_classes")
  val, noisy, class_names = None, None, ()
  if spec.kind == "arrays":
    if cfg.name == "digits":
      (x_train, y_train), (x_test, y_test) = arrays.load_digits()
      num_classes, where = spec.num_classes, cfg.name
    else:
      (x_train, y_train), (x_test, y_test) = arrays.load_npz(cfg.path)
      where = cfg.path
      num_classes = num_classes or arrays.infer_num_classes(cfg.path, y_train, y_test)
    train = Split(sources.ArraySource(x_train), y_train)
    test = Split(sources.ArraySource(x_test), y_test)
  elif spec.kind == "files":
    lists, num_classes = _file_lists(cfg, num_classes)
    size = cfg.image_size or image_files.common_size([f.paths for f in lists.values()])
    splits = {k: _file_split(cfg, files, mode, k, size) for k, files in lists.items()}
    train, test, val = splits["train"], splits["test"], splits.get("val")
    # The labels on disk are what trains (web labels for Clothing1M/WebVision): noise.kind 'none' or 'real'.
    noisy, where, class_names = train.labels, cfg.path, lists["train"].class_names
  else:
    full_name, data_dir, size = tfds_name(cfg), opt(cfg, "tfds_dir"), image_size(cfg)
    noisy_key = opt(cfg, "real_label_key") or (spec.noisy_label_keys[0] if spec.noisy_label_keys else None)
    split = opt(cfg, "train_split") or spec.train_splits[0]
    (train_source, y_train, noisy), num_classes = tfds_data.open_split(
      full_name, split, data_dir, image_size=size, noisy_key=noisy_key, num_classes=num_classes
    )
    (test_source, y_test, _), _ = tfds_data.open_split(full_name, spec.test_split, data_dir, image_size=size)
    if mode == "memory":
      train_source, test_source = sources.materialize(train_source), sources.materialize(test_source)
    train, test, where = Split(train_source, y_train), Split(test_source, y_test), full_name
  # A label >= num_classes would be silently dropped by one-hot encoding; only a given num_classes can
  # fail here, the other checks are cheap insurance.
  arrays.check_label_range(where, num_classes, y_train=train.labels, y_test=test.labels, real_noisy_labels=noisy)
  mean, std = statistics.source_mean_std(
    train.source, cfg.stats_max_examples, seed, cfg.input_workers, where=f"{where}: training images"
  )
  crop_pad, flip = augmentation(cfg, train.source.shape[0])
  return Data(
    name=cfg.name,
    num_classes=int(num_classes),
    train=train,
    test=test,
    val=val,
    real_noisy_labels=noisy,
    mean=mean,
    std=std,
    crop_pad=crop_pad,
    flip=flip,
    mode=mode,
    class_names=tuple(class_names),
  )


def _subset(split: Split, indices) -> Split:
  if isinstance(split.source, sources.ArraySource):
    return Split(sources.ArraySource(split.source.images[indices]), split.labels[indices])
  return Split(sources.Subset(split.source, indices), split.labels[indices])


def hold_out(dataset: Data, train_idx, val_idx) -> Data:
  """`dataset` with its training set split in two: `train` keeps the examples `train_idx`, `val` becomes the
  examples `val_idx` (with their dataset labels; the trainer scores them against the labels it chooses).

  Channel statistics stay those of the whole training set: they use no label, and keeping them makes a run
  with and without a split normalise alike.
  """
  if dataset.val is not None:
    raise ValueError(f"{dataset.name} has its own validation split; a second one cannot be held out")
  noisy = None if dataset.real_noisy_labels is None else dataset.real_noisy_labels[train_idx]
  return dataclasses.replace(
    dataset,
    train=_subset(dataset.train, train_idx),
    val=_subset(dataset.train, val_idx),
    real_noisy_labels=noisy,
  )


def _file_lists(cfg, num_classes):
  """The splits of an image-file dataset as `image_files.FileList`s, and the number of classes."""
  if cfg.name == "image_folder":
    lists = image_files.scan_image_folder(cfg.path)
    found = len(lists["train"].class_names)
    if num_classes is not None and num_classes != found:
      raise ValueError(
        f"data.num_classes={num_classes} does not match {cfg.path}/train, which has {found} class "
        "folders; leave data.num_classes at 0 to use them"
      )
    num_classes = found
  else:
    given = {"train": cfg.train_list, "test": cfg.test_list, "val": cfg.val_list}
    lists = {
      k: image_files.read_list_file(path, cfg.path, num_classes=num_classes) for k, path in given.items() if path
    }
    if num_classes is None:
      num_classes = int(max(f.labels.max() for f in lists.values())) + 1
  arrays.check_label_range(cfg.path, num_classes, **{f"{k} labels": f.labels for k, f in lists.items()})
  return lists, num_classes


def _file_split(cfg, files: image_files.FileList, mode: str, split: str, size: int) -> Split:
  """One split of image files: decoded now (memory), or a source checked as far as needed (stream)."""
  if mode == "memory":
    images, kept, _ = image_files.load_images(files, size, skip_corrupt=cfg.skip_corrupt, num_threads=cfg.input_workers)
    return Split(sources.ArraySource(images), files.labels[kept])
  source = sources.FileSource(files, size)
  # Test and validation sets are small: decode-check them now rather than fail in an evaluation. The
  # training set is checked only for skip_corrupt (a bad file must be out of the index before any batch
  # is drawn); otherwise a bad file stops the run when a batch reads it, on every process.
  if split == "train" and not cfg.skip_corrupt:
    return Split(source, files.labels)
  kept, bad = sources.check_readable(source, cfg.input_workers)
  if bad and not cfg.skip_corrupt:
    raise image_files.CorruptImageError(
      f"{files.source}: {len(bad)} image(s) cannot be read, e.g. {bad[:3]}; set data.skip_corrupt=True to skip them"
    )
  if bad and jax.process_index() == 0:
    print(f"{files.source}: skipped {len(bad)} unreadable image(s), e.g. {bad[:3]}")
  if not len(kept):
    raise image_files.ImageFileError(f"{files.source}: none of its {len(source)} images can be read")
  return Split(sources.Subset(source, kept), files.labels[kept])
