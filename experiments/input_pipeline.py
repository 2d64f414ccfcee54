"""Loads image-classification datasets into host memory; augments and normalises batches on device.

Every dataset becomes a `Dataset` of uint8 numpy arrays. The largest supported one (mini-ImageNet at
84 px, ~1 GB) fits in host RAM, which keeps per-example state (the ids behind pruning weights) and
batch gathering plain numpy indexing.

Sources:
  * `digits`: scikit-learn's bundled 8x8 digits, no download.
  * `npz`: a local file in the keras `mnist.npz` layout.
  * TFDS names: read through `tfds.data_source` (ArrayRecord random access), so TensorFlow is not
    needed at training time. Preparing a dataset once does need TensorFlow and internet; see
    `DatasetNotPreparedError`.

Real-noise datasets (`cifar10_n`, `cifar100_n`, `controlled_noisy_web_labels`) also return the
human/web labels as `real_noisy_labels`; `y_train` stays the clean label where one exists.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets
import sklearn.model_selection
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from experiments import image_files, streaming


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dataset:
  """A whole dataset in host memory. Images are uint8 [N, H, W, C]; labels int32 [N]."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray  # clean labels; for web-noise data with no clean label, the noisy one
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]  # per channel, of x_train / 255
  std: tuple[float, ...]
  augment_flip: bool  # horizontal flip preserves the label (not for digits)
  augment_crop_pad: int  # zero padding of the random crop; 0 disables it
  real_noisy_labels: np.ndarray | None = None  # human/web labels aligned with y_train
  x_val: np.ndarray | None = None  # hold-out from train; y_val has the clean labels
  y_val: np.ndarray | None = None
  train_ids: np.ndarray  # int32 0..N-1, stable ids for per-example state

  @property
  def image_shape(self):
    return self.x_train.shape[1:]


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not on disk in the ArrayRecord format that `tfds.data_source` reads."""


# -------------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class _Spec:
  """What differs between datasets. For tuples of choices, the first entry is the default."""

  flip: bool
  crop_pad: int | None = None  # None: image_size // 8 (4 px at 32 px, as on CIFAR)
  tfds: bool = True
  configs: tuple[str, ...] = ()  # TFDS builder configs
  train_splits: tuple[str, ...] = ("train",)
  test_split: str = "test"
  noisy_label_keys: tuple[str, ...] = ()
  image_size: int | None = None  # set for datasets stored at varying sizes: resized on load
  manual_download: bool = False  # `tfds build` needs files fetched by hand first
  # Known up front so `validate` can reject a wrong config.num_classes before loading; load() checks
  # it against the TFDS metadata too. None: inferred from the labels (npz).
  num_classes: int | None = None


# Controlled Noisy Web Labels ships one training split per web-noise level (train_00 ... train_80);
# each is a different image set, so the level is chosen with `train_split`.
_CNWL_SPLITS = tuple(f"train_{p:02d}" for p in (40, 0, 5, 10, 15, 20, 30, 50, 60, 80))

_SPECS = {
  # 8x8 digits: a 1 px shift is 12% of the image and digits are not mirror-symmetric, so no
  # augmentation at all.
  "digits": _Spec(flip=False, crop_pad=0, tfds=False, num_classes=10),
  # Unknown content in the mnist.npz layout: treated like digits (no flip), crop pad = size // 8.
  "npz": _Spec(flip=False, tfds=False),
  "mnist": _Spec(flip=False, crop_pad=2, num_classes=10),
  "fashion_mnist": _Spec(flip=True, crop_pad=2, num_classes=10),
  "cifar10": _Spec(flip=True, crop_pad=4, num_classes=10),
  "cifar100": _Spec(flip=True, crop_pad=4, num_classes=100),
  "svhn_cropped": _Spec(flip=False, crop_pad=4, num_classes=10),
  # CIFAR-N (Wei et al., ICLR 2022): human labels exist for the train split only.
  "cifar10_n": _Spec(
    flip=True,
    crop_pad=4,
    manual_download=True,
    num_classes=10,
    noisy_label_keys=("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"),
  ),
  "cifar100_n": _Spec(flip=True, crop_pad=4, manual_download=True, num_classes=100, noisy_label_keys=("noise_label",)),
  # Imagewang = Imagenette + Imagewoof (20 classes); its validation split, used as the test set,
  # holds Imagewoof images only. Images come at varying sizes: centre crop + resize on load.
  "imagewang": _Spec(
    flip=True, configs=("160px", "320px", "full-size"), test_split="validation", image_size=64, num_classes=20
  ),
  # Red/Blue mini-ImageNet (Jiang et al., ICML 2020): 'label' is the web label and there is no
  # clean one; the 'validation' split is clean and serves as the test set. Stored at 84x84.
  "controlled_noisy_web_labels": _Spec(
    flip=True,
    configs=("mini_imagenet_red", "mini_imagenet_blue"),
    train_splits=_CNWL_SPLITS,
    test_split="validation",
    noisy_label_keys=("label",),
    image_size=84,
    manual_download=True,
    num_classes=100,
  ),
  # Image files as users have them (experiments/image_files.py): class sub-folders, or `path label` list
  # files (Clothing1M, WebVision, Food-101N). Natural photos: flip; decoded to image_size x image_size.
  "image_folder": _Spec(flip=True, tfds=False),
  "image_list": _Spec(flip=True, tfds=False),
}
DATASETS = tuple(_SPECS)
FILE_DATASETS = ("image_folder", "image_list")
INPUT_MODES = ("memory", "stream", "auto")

_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")

# Floor of the per-channel std (of x / 255): one grey level. A constant channel has std 0, and dividing
# by it would feed inf/NaN to the model, which surfaces much later as a diverging loss.
MIN_STD = 1 / 255


def validate(
  name: str,
  *,
  data_path: str | None = None,
  real_label_key: str | None = None,
  tfds_config: str | None = None,
  image_size: int | None = None,
  val_size: int = 0,
  train_split: str | None = None,
  data_dir: str | None = None,
  val_seed: int = 0,
  num_classes: int | None = None,
  train_list: str | None = None,
  test_list: str | None = None,
  val_list: str | None = None,
  skip_corrupt: bool = False,
) -> None:
  """Cheap argument checks, run before anything is loaded or compiled. Takes `load`'s arguments."""
  del data_dir, val_seed, skip_corrupt  # nothing to check without reading data
  if name not in _SPECS:
    raise ValueError(f"dataset={name!r} is unknown; valid choices: {list(DATASETS)}")
  spec = _SPECS[name]
  lists = {"train_list": train_list, "test_list": test_list, "val_list": val_list}
  if name != "image_list" and any(lists.values()):
    raise ValueError(
      f"{[k for k, v in lists.items() if v]} given, but list files belong to dataset='image_list' (dataset={name!r})"
    )
  if name in FILE_DATASETS:
    if not data_path or not os.path.isdir(data_path):
      layout = (
        "with train/<class>/*, test/<class>/* and optionally val/<class>/*"
        if name == "image_folder"
        else "that the paths in the list files are relative to"
      )
      raise ValueError(
        f"dataset={name!r} needs data_path, a directory {layout}; got data_path={data_path!r}"
        + ("" if not data_path else " (no such directory)")
      )
    if not image_size or image_size < 1:
      raise ValueError(
        f"dataset={name!r} decodes images to image_size x image_size: set image_size >= 1 (got {image_size!r})"
      )
    if name == "image_list":
      for key in ("train_list", "test_list"):
        if not lists[key]:
          raise ValueError(f"dataset='image_list' needs {key}, a file of `path label` lines")
      for key, path in lists.items():
        if path and not os.path.isfile(path):
          raise ValueError(f"{key}={path!r}: no such file")
      if val_list and val_size:
        raise ValueError(f"val_list={val_list!r} and val_size={val_size} both give a validation set; set one")
  if num_classes is not None:
    # bool is an int subclass; num_classes=True is a config slip, not 1 class.
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
      raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2 (or None to use the dataset's own count)")
    if num_classes < 2:
      raise ValueError(
        f"num_classes={num_classes!r} is out of range; valid range is >= 2 (or None to use the dataset's own count)"
      )
    if spec.num_classes is not None and num_classes != spec.num_classes:
      raise ValueError(
        f"num_classes={num_classes} does not match {name!r}, which has "
        f"{spec.num_classes} classes; leave num_classes unset to use the dataset's"
      )
  if name == "npz":
    if not data_path:
      raise ValueError(
        f"dataset='npz' needs data_path, a .npz file with arrays {', '.join(_NPZ_ARRAYS)} (the keras mnist.npz layout)"
      )
    if not os.path.isfile(data_path):
      raise ValueError(f"data_path={data_path!r}: no such file")
  if real_label_key is not None and real_label_key not in spec.noisy_label_keys:
    if spec.noisy_label_keys:
      raise ValueError(
        f"real_label_key={real_label_key!r} is not a label set of {name!r}; "
        f"valid choices: {list(spec.noisy_label_keys)}"
      )
    with_labels = [n for n, s in _SPECS.items() if s.noisy_label_keys]
    raise ValueError(
      f"real_label_key={real_label_key!r} was given, but {name!r} has no human/web "
      f"labels; datasets that do: {with_labels}"
    )
  if tfds_config is not None and tfds_config not in spec.configs:
    raise ValueError(
      f"tfds_config={tfds_config!r} is not a config of {name!r}; "
      f"valid choices: {list(spec.configs) or 'none (leave it unset)'}"
    )
  if train_split is not None and train_split not in spec.train_splits:
    raise ValueError(
      f"train_split={train_split!r} is not a training split of {name!r}; valid choices: {list(spec.train_splits)}"
    )
  if image_size is not None and name not in FILE_DATASETS:
    if spec.image_size is None:
      raise ValueError(
        f"image_size={image_size!r} was given, but {name!r} has a fixed image size; "
        f"resizing applies to imagewang, controlled_noisy_web_labels and {list(FILE_DATASETS)}"
      )
    if image_size < 1:
      raise ValueError(f"image_size={image_size!r} is out of range; valid range is >= 1")
  if val_size < 0:
    raise ValueError(f"val_size={val_size!r} is out of range; valid range is >= 0")


def load(
  name: str,
  *,
  data_dir: str | None = None,
  data_path: str | None = None,
  real_label_key: str | None = None,
  image_size: int | None = None,
  val_size: int = 0,
  val_seed: int = 0,
  tfds_config: str | None = None,
  train_split: str | None = None,
  num_classes: int | None = None,
  train_list: str | None = None,
  test_list: str | None = None,
  val_list: str | None = None,
  skip_corrupt: bool = False,
) -> Dataset:
  """Loads a whole dataset into host memory.

  Args:
    name: one of `DATASETS`.
    data_dir: TFDS data directory (None: the TFDS default, usually ~/tensorflow_datasets).
    data_path: the .npz file, for name='npz'.
    real_label_key: which human/web label set becomes `real_noisy_labels` (None: the first in
      the dataset's list, e.g. 'aggre_label' for cifar10_n, the least noisy set).
    image_size: side of the square images for datasets stored at varying sizes (64 for imagewang,
      84 for controlled_noisy_web_labels).
    val_size: examples held out of train as a validation set (0: none).
    val_seed: seed of the hold-out draw.
    tfds_config: TFDS builder config (imagewang: '160px'; controlled_noisy_web_labels:
      'mini_imagenet_red').
    train_split: training split; only controlled_noisy_web_labels has several, one per web-noise
      level (default 'train_40').
    num_classes: the number of classes (None: the dataset's own; for npz, max label + 1, which is
      then an error if y_train lacks some class below it or y_test has a class y_train lacks).
      Given for npz, every label must be below it and classes absent from training are allowed;
      for the other datasets it must equal the dataset's count.
    train_list, test_list, val_list: for 'image_list', files of `path label` lines.
    skip_corrupt: image files that cannot be decoded are skipped and counted instead of an error.
  """
  files = dict(train_list=train_list, test_list=test_list, val_list=val_list, skip_corrupt=skip_corrupt)
  validate(
    name,
    data_path=data_path,
    real_label_key=real_label_key,
    tfds_config=tfds_config,
    image_size=image_size,
    val_size=val_size,
    train_split=train_split,
    num_classes=num_classes,
    **files,
  )
  spec = _SPECS[name]
  image_size = image_size or spec.image_size
  x_val = y_val = None
  if name in FILE_DATASETS:
    lists, num_classes = file_lists(name, data_path, num_classes=num_classes, val_size=val_size, **files)
    decoded = {k: image_files.load_images(f, image_size, skip_corrupt=skip_corrupt) for k, f in lists.items()}
    (x_train, kept), (x_test, kept_test) = decoded["train"][:2], decoded["test"][:2]
    y_train, y_test = lists["train"].labels[kept], lists["test"].labels[kept_test]
    if "val" in decoded:
      x_val, y_val = decoded["val"][0], lists["val"].labels[decoded["val"][1]]
    # The labels on disk are what trains (web labels for Clothing1M/WebVision): noise.kind 'none' or 'real'.
    noisy, source = y_train, data_path
  elif name == "digits":
    (x_train, y_train), (x_test, y_test) = _load_digits()
    noisy, num_classes, source = None, spec.num_classes, name
  elif name == "npz":
    (x_train, y_train), (x_test, y_test) = _load_npz(data_path)
    noisy, source = None, data_path
    if num_classes is None:
      num_classes = _infer_num_classes(data_path, y_train, y_test)
  else:
    noisy_key = real_label_key or (spec.noisy_label_keys[0] if spec.noisy_label_keys else None)
    full_name = f"{name}/{tfds_config or spec.configs[0]}" if spec.configs else name
    train, num_classes = _load_tfds(
      full_name,
      train_split or spec.train_splits[0],
      data_dir,
      noisy_key=noisy_key,
      image_size=image_size,
      num_classes=num_classes,
    )
    test, _ = _load_tfds(full_name, spec.test_split, data_dir, image_size=image_size)
    (x_train, y_train, noisy), (x_test, y_test, _) = train, test
    source = full_name
  # A label >= num_classes would be silently dropped by one-hot encoding; only a given npz
  # num_classes can fail here, the other checks are cheap insurance.
  _check_label_range(source, num_classes, y_train=y_train, y_test=y_test, real_noisy_labels=noisy)

  if val_size:
    train_idx, val_idx = _hold_out(len(y_train), val_size, val_seed)
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]
    noisy = None if noisy is None else noisy[train_idx]

  mean, std = channel_mean_std(x_train, where=f"{source}: x_train")
  crop_pad = spec.crop_pad if spec.crop_pad is not None else x_train.shape[1] // 8
  return Dataset(
    name=name,
    x_train=x_train,
    y_train=y_train,
    x_test=x_test,
    y_test=y_test,
    num_classes=num_classes,
    mean=mean,
    std=std,
    augment_flip=spec.flip,
    augment_crop_pad=crop_pad,
    real_noisy_labels=noisy,
    x_val=x_val,
    y_val=y_val,
    train_ids=np.arange(len(y_train), dtype=np.int32),
  )


# -------------------------------------------------------------------------------- streamed
@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamDataset:
  """A dataset read on demand (experiments/streaming.py): labels in memory, images from sources that
  decode one example by index. Same fields as `Dataset` with sources in place of the image arrays."""

  name: str
  train_source: object
  y_train: np.ndarray
  test_source: object
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment_flip: bool
  augment_crop_pad: int
  real_noisy_labels: np.ndarray | None = None
  val_source: object | None = None
  y_val: np.ndarray | None = None
  train_ids: np.ndarray

  @property
  def image_shape(self):
    return self.train_source.shape


def file_lists(
  name, data_path, *, num_classes=None, val_size=0, train_list=None, test_list=None, val_list=None, skip_corrupt=False
):
  """The splits of an image-file dataset as `image_files.FileList`s, and the number of classes."""
  del skip_corrupt
  if name == "image_folder":
    lists = image_files.scan_image_folder(data_path)
    found = len(lists["train"].class_names)
    if num_classes is not None and num_classes != found:
      raise ValueError(
        f"num_classes={num_classes} does not match {data_path}/train, which has {found} class "
        "folders; leave num_classes unset to use them"
      )
    num_classes = found
  else:
    given = {"train": train_list, "test": test_list, "val": val_list}
    lists = {
      k: image_files.read_list_file(path, data_path, num_classes=num_classes) for k, path in given.items() if path
    }
    if num_classes is None:
      num_classes = int(max(f.labels.max() for f in lists.values())) + 1
  if "val" in lists and val_size:
    raise ValueError(
      f"{lists['val'].source} is a validation split and val_size={val_size} would hold out "
      "another; set val_size=0 to use the split"
    )
  _check_label_range(data_path, num_classes, **{f"{k} labels": f.labels for k, f in lists.items()})
  return lists, num_classes


def train_images_bytes(
  name, *, data_dir=None, data_path=None, image_size=None, tfds_config=None, train_split=None, train_list=None, **unused
) -> int | None:
  """Decoded size of the training images, for input='auto' (None: the dataset is in memory anyway)."""
  del unused
  spec = _SPECS[name]
  if name in ("digits", "npz"):
    return None
  if name in FILE_DATASETS:
    n = (
      len(image_files.scan_image_folder(data_path)["train"].paths)
      if name == "image_folder"
      else sum(1 for line in open(train_list) if line.strip() and not line.startswith("#"))
    )
    return n * image_size * image_size * 3
  full_name = f"{name}/{tfds_config or spec.configs[0]}" if spec.configs else name
  source = _tfds_source(full_name, train_split or spec.train_splits[0], data_dir)
  shape = source.dataset_info.features["image"].shape
  size = image_size or spec.image_size
  if size:
    shape = (size, size, shape[-1])
  return len(source) * int(np.prod(shape))


def open_stream(
  name: str,
  *,
  data_dir=None,
  data_path=None,
  real_label_key=None,
  image_size=None,
  val_size=0,
  val_seed=0,
  tfds_config=None,
  train_split=None,
  num_classes=None,
  train_list=None,
  test_list=None,
  val_list=None,
  skip_corrupt=False,
  stats_max_examples=20000,
  workers=0,
) -> StreamDataset:
  """Opens a dataset for streaming: labels read now, images decoded when batches need them.

  Takes `load`'s arguments; the channel mean/std come from every training image up to
  `stats_max_examples`, else from a seeded sample of that many (`load` uses every image).
  """
  files = dict(train_list=train_list, test_list=test_list, val_list=val_list, skip_corrupt=skip_corrupt)
  validate(
    name,
    data_path=data_path,
    real_label_key=real_label_key,
    tfds_config=tfds_config,
    image_size=image_size,
    val_size=val_size,
    train_split=train_split,
    num_classes=num_classes,
    **files,
  )
  spec = _SPECS[name]
  image_size = image_size or spec.image_size
  val_source = y_val = None
  if name in ("digits", "npz"):  # already in memory; streamed from the arrays (tests, equality checks)
    d = load(name, data_path=data_path, num_classes=num_classes, val_size=val_size, val_seed=val_seed)
    return StreamDataset(
      name=name,
      train_source=streaming.ArraySource(d.x_train),
      y_train=d.y_train,
      test_source=streaming.ArraySource(d.x_test),
      y_test=d.y_test,
      num_classes=d.num_classes,
      mean=d.mean,
      std=d.std,
      augment_flip=d.augment_flip,
      augment_crop_pad=d.augment_crop_pad,
      real_noisy_labels=d.real_noisy_labels,
      train_ids=d.train_ids,
      val_source=None if d.x_val is None else streaming.ArraySource(d.x_val),
      y_val=d.y_val,
    )
  if name in FILE_DATASETS:
    lists, num_classes = file_lists(name, data_path, num_classes=num_classes, val_size=val_size, **files)
    sources = {k: streaming.FileSource(f, image_size) for k, f in lists.items()}
    labels = {k: f.labels for k, f in lists.items()}
    for k, src in sources.items():
      # Test and validation sets are small: decode-check them now rather than fail in an evaluation. The
      # training set is checked only for skip_corrupt (a bad file must be out of the index before any batch
      # is drawn); otherwise a bad file stops the run when a batch reads it, on every process.
      if k == "train" and not skip_corrupt:
        continue
      kept, bad = streaming.check_readable(src, workers)
      if bad and not skip_corrupt:
        raise image_files.CorruptImageError(
          f"{lists[k].source}: {len(bad)} image(s) cannot be read, e.g. {bad[:3]}; set skip_corrupt=True to skip them"
        )
      if bad and jax.process_index() == 0:
        print(f"{lists[k].source}: skipped {len(bad)} unreadable image(s), e.g. {bad[:3]}")
      if not len(kept):
        raise image_files.ImageFileError(f"{lists[k].source}: none of its {len(src)} images can be read")
      sources[k], labels[k] = streaming.Subset(src, kept), labels[k][kept]
    y_train, noisy, y_test = labels["train"], labels["train"], labels["test"]
    train_source, test_source = sources["train"], sources["test"]
    if "val" in sources:
      val_source, y_val = sources["val"], labels["val"]
    where = data_path
  else:
    noisy_key = real_label_key or (spec.noisy_label_keys[0] if spec.noisy_label_keys else None)
    full_name = f"{name}/{tfds_config or spec.configs[0]}" if spec.configs else name
    (train_source, y_train, noisy), num_classes = _tfds_stream(
      full_name, train_split or spec.train_splits[0], data_dir, image_size, noisy_key, num_classes
    )
    (test_source, y_test, _), _ = _tfds_stream(full_name, spec.test_split, data_dir, image_size, None, None)
    where = full_name
  _check_label_range(where, num_classes, y_train=y_train, y_test=y_test, real_noisy_labels=noisy)
  if val_size:
    train_idx, val_idx = _hold_out(len(y_train), val_size, val_seed)
    val_source, y_val = streaming.Subset(train_source, val_idx), y_train[val_idx]
    train_source, y_train = streaming.Subset(train_source, train_idx), y_train[train_idx]
    noisy = None if noisy is None else noisy[train_idx]
  mean, std = streaming.channel_mean_std(train_source, stats_max_examples, val_seed, workers)
  crop_pad = spec.crop_pad if spec.crop_pad is not None else train_source.shape[0] // 8
  return StreamDataset(
    name=name,
    train_source=train_source,
    y_train=y_train,
    test_source=test_source,
    y_test=y_test,
    num_classes=num_classes,
    mean=mean,
    std=std,
    augment_flip=spec.flip,
    augment_crop_pad=crop_pad,
    real_noisy_labels=noisy,
    val_source=val_source,
    y_val=y_val,
    train_ids=np.arange(len(y_train), dtype=np.int32),
  )


def _tfds_stream(full_name, split, data_dir, image_size, noisy_key, num_classes):
  """((source, labels, noisy labels or None), num_classes) of a TFDS split, images left undecoded."""
  source, dataset_classes = _tfds_split(full_name, split, data_dir, num_classes)
  # The label pass skips image decoding: reading 1M labels must not decode 1M JPEGs. Where TFDS cannot
  # skip it (tfds.testing.mock_data re-encodes images, which needs TensorFlow), it decodes them.
  labels_only = tfds.data_source(
    full_name, split=split, data_dir=data_dir, download=False, decoders={"image": tfds.decode.SkipDecoding()}
  )
  try:
    labels_only.__getitems__([0])
  except Exception as e:  # noqa: BLE001 - any failure of the fast path falls back to the plain one
    if jax.process_index() == 0:
      print(f"{full_name} {split}: reading labels with image decoding ({type(e).__name__}: cannot skip it here)")
    labels_only = source
  labels, noisy = _read_labels(labels_only, noisy_key)
  shape = source.dataset_info.features["image"].shape
  if image_size:
    shape = (image_size, image_size, shape[-1])
  elif None in shape:
    shape = source[0]["image"].shape
  return (streaming.TfdsSource(source, image_size, shape), labels, noisy), dataset_classes


# -------------------------------------------------------------------------------- sources
def _load_digits():
  """sklearn's 1797 8x8 digits with a fixed stratified 70/30 split: 1257 train / 540 test."""
  digits = sklearn.datasets.load_digits()
  # Pixel values are counts 0..16; rescale so every dataset shares the uint8 0..255 convention.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
    images, digits.target.astype(np.int32), test_size=0.3, stratify=digits.target, random_state=0
  )
  return (x_train, y_train), (x_test, y_test)


def _load_npz(path):
  """Reads and checks a keras-style .npz; every error names the file and the array at fault."""
  try:
    # allow_pickle=False: an .npz is a data file, reading it should never execute code.
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a valid .npz file ({e})") from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise ValueError(f"{path}: holds a single array, not an .npz archive of {list(_NPZ_ARRAYS)}")
  with npz:
    missing = [k for k in _NPZ_ARRAYS if k not in npz.files]
    if missing:
      raise ValueError(f"{path}: missing arrays {missing}; the file has {npz.files}, needs {list(_NPZ_ARRAYS)}")
    try:
      arrays = {k: npz[k] for k in _NPZ_ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # e.g. object arrays, corrupt members
      raise ValueError(f"{path}: cannot read its arrays ({e})") from e

  splits = []
  for part in ("train", "test"):
    x = _npz_images(path, f"x_{part}", arrays[f"x_{part}"])
    y = _npz_labels(path, f"y_{part}", arrays[f"y_{part}"])
    if len(x) != len(y):
      raise ValueError(f"{path}: x_{part} has {len(x)} images but y_{part} has {len(y)} labels")
    if not len(x):
      raise ValueError(f"{path}: x_{part} is empty")
    splits.append((x, y))
  if splits[0][0].shape[1:] != splits[1][0].shape[1:]:
    raise ValueError(
      f"{path}: x_train images are {splits[0][0].shape[1:]} but x_test images are "
      f"{splits[1][0].shape[1:]}; they must match"
    )
  return splits


def _npz_images(path, key, x):
  shape = x.shape  # as in the file, for error positions
  if x.ndim == 3:  # [N, H, W] grayscale, as in mnist.npz
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{path}: {key} has shape {x.shape}; expected [N, H, W] or [N, H, W, C]")
  if x.dtype == np.uint8:
    return x
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"{path}: {key} has dtype {x.dtype}; expected uint8, integer or float images")
  if np.issubdtype(x.dtype, np.floating):
    # NaN compares false, so it would pass the range check below and become an arbitrary uint8.
    bad = ~np.isfinite(x)
    if bad.any():
      first = int(np.argmax(bad))  # flat index; expanding [N, H, W] to [..., 1] keeps the order
      position = ", ".join(str(int(i)) for i in np.unravel_index(first, shape))
      raise ValueError(
        f"{path}: {key}[{position}] = {float(x.reshape(-1)[first])}; images must be "
        f"finite, in [0, 255] (or [0, 1]) (non-finite values in {key}: {int(bad.sum())})"
      )
  if x.size and (x.min() < 0 or x.max() > 255):
    raise ValueError(
      f"{path}: {key} values span [{x.min()}, {x.max()}]; expected [0, 255] (or [0, 1] for float images)"
    )
  # Floats with max <= 1 are taken as [0, 1] images; anything else as [0, 255].
  if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1:
    x = x * 255
  return np.round(x).astype(np.uint8)


def _npz_labels(path, key, y):
  if y.ndim != 1:
    raise ValueError(f"{path}: {key} has shape {y.shape}; expected [N] integer class indices")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{path}: {key} has dtype {y.dtype}; labels must be integer class indices")
  if len(y) and y.min() < 0:
    raise ValueError(f"{path}: {key} has negative labels (min {y.min()}); expected class indices >= 0")
  return y.astype(np.int32)


def _infer_num_classes(path, y_train, y_test):
  """max label + 1 over y_train and y_test; an error unless every one of those classes trains.

  A stray label (10 in a 0-9 set) would otherwise silently add a class, and test classes that never
  occur in training would be scored as errors without a word.
  """
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  if num_classes < 2:
    raise ValueError(f"{path}: every label in y_train and y_test is 0, a single class; a classifier needs >= 2 classes")
  counts = np.bincount(y_train, minlength=num_classes)
  missing = np.flatnonzero(counts == 0)  # no training example; split by whether y_test has them
  in_test = np.isin(missing, y_test)
  problems = []
  if not in_test.all():
    problems.append(f"y_train has no example of classes {_some(missing[~in_test])} (labels span 0..{num_classes - 1})")
  if in_test.any():
    problems.append(f"y_test has classes {_some(missing[in_test])} that never occur in y_train")
  if problems:
    raise ValueError(
      f"{path}: cannot infer the number of classes: {'; '.join(problems)}. Inferring "
      f"{num_classes} (max label + 1) would make classes with no training example; if "
      "that is intended, set num_classes in the config to allow it"
    )
  if jax.process_index() == 0:
    # The rarest class shows a stray label (one 10 in a 0-9 set) that the gap checks cannot catch.
    rarest = int(np.argmin(counts))
    fewest = int(counts[rarest])
    print(
      f"npz: {num_classes} classes inferred from y_train/y_test (labels 0..{num_classes - 1}; "
      f"rarest in y_train: class {rarest}, {fewest} example{'s' * (fewest != 1)})"
    )
  return num_classes


def _check_label_range(source, num_classes, **labels):
  """Every label array (None: absent) must hold class indices in [0, num_classes - 1]."""
  for key, y in labels.items():
    if y is None:
      continue
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(
        f"{source}: {key}[{i}] = {y[i]} is out of range for num_classes={num_classes}; "
        f"valid range is [0, {num_classes - 1}] (labels of {key} outside it: "
        f"{int(bad.sum())})"
      )


def _some(values, limit=20):
  """A list of ints for a message, shortened when long (a 1000-class gap list helps nobody)."""
  values = [int(v) for v in values]
  if len(values) <= limit:
    return str(values)
  return f"{values[:limit]} and {len(values) - limit} more"


_READ_BATCH = 1024  # records per data-source read: amortises ArrayRecord's per-call overhead


def _load_tfds(full_name, split, data_dir, *, image_size, noisy_key=None, num_classes=None):
  """Reads one TFDS split into numpy: ((images, labels, noisy labels or None), num_classes)."""
  source, dataset_classes = _tfds_split(full_name, split, data_dir, num_classes)
  images = None  # allocated once the first (possibly resized) image gives the shape

  def keep_image(i, example):
    nonlocal images
    image = example["image"] if image_size is None else center_crop_resize(example["image"], image_size)
    if images is None:
      images = np.empty((len(source), *image.shape), np.uint8)
    images[i] = image

  labels, noisy = _read_labels(source, noisy_key, keep_image)
  return (images, labels, noisy), dataset_classes


def _tfds_split(full_name, split, data_dir, num_classes):
  """(data source, the dataset's class count); a given `num_classes` must equal that count (checked before
  the slow read)."""
  source = _tfds_source(full_name, split, data_dir)
  dataset_classes = source.dataset_info.features["label"].num_classes
  if num_classes is not None and num_classes != dataset_classes:
    raise ValueError(
      f"num_classes={num_classes} does not match {full_name!r}, which has "
      f"{dataset_classes} classes; leave num_classes unset to use the dataset's"
    )
  return source, dataset_classes


def _read_labels(source, noisy_key, each_example=None):
  """(labels, noisy labels or None) of every example of `source`, read in batches; `each_example(i,
  example)` also sees every example."""
  n = len(source)
  labels = np.empty(n, np.int32)
  noisy = None if noisy_key is None else np.empty(n, np.int32)
  for start in range(0, n, _READ_BATCH):
    for i, example in enumerate(source.__getitems__(list(range(start, min(start + _READ_BATCH, n)))), start):
      labels[i] = example["label"]
      if noisy is not None:
        noisy[i] = example[noisy_key]
      if each_example is not None:
        each_example(i, example)
  return labels, noisy


def _tfds_source(full_name, split, data_dir):
  try:
    return tfds.data_source(full_name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    # TFDS reports a missing dataset confusingly (e.g. NotImplementedError about TFRecord), so check
    # directly and say how to prepare it. Anything else is a genuine error and propagates.
    if tfds.builder(full_name, data_dir=data_dir).is_prepared():
      raise
    raise DatasetNotPreparedError(_not_prepared_message(full_name, data_dir)) from e


def center_crop_resize(image, size):
  """Centre crop to a square, then resize to size x size (bicubic, which antialiases when shrinking)."""
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  pil = ImageOps.fit(pil, (size, size), method=Image.Resampling.BICUBIC)
  return np.asarray(pil, np.uint8).reshape(size, size, channels)


def _not_prepared_message(full_name, data_dir):
  name = full_name.split("/")[0]
  where = data_dir or "the TFDS default data_dir (TFDS_DATA_DIR or ~/tensorflow_datasets)"
  cmd = f"tfds build {full_name} --file_format=array_record"
  if data_dir:
    cmd += f" --data_dir={data_dir}"
  message = (
    f"TFDS dataset {full_name!r} is not prepared in {where}. Prepare it once with\n  {cmd}\n"
    "This step needs TensorFlow and internet access (e.g. `pip install tensorflow` in a "
    "separate environment); reading it afterwards needs neither."
  )
  if _SPECS[name].manual_download:
    message += (
      f"\n{name} also needs files downloaded by hand first; add --manual_dir=DIR and see "
      f"https://www.tensorflow.org/datasets/catalog/{name} for what to put there."
    )
  return message


# -------------------------------------------------------------------------------- splits & stats
def _hold_out(n, val_size, seed):
  """Random (unstratified) indices: (train, val), both in increasing order.

  The validation labels are the clean ones: selecting the epoch on a clean validation set is the
  TCE paper's protocol. With truly noisy data no clean labels exist, so this is optimistic.
  """
  if val_size >= n:
    raise ValueError(f"val_size={val_size} must be smaller than the training set ({n} examples)")
  val = np.zeros(n, bool)
  val[np.random.default_rng(seed).choice(n, size=val_size, replace=False)] = True
  return np.flatnonzero(~val), np.flatnonzero(val)


def channel_mean_std(x, *, where="x_train"):
  """Per-channel mean and std of x / 255; the std is floored at MIN_STD (a warning names the channel).

  `x` is a uint8 array [..., C] or an iterable of them (blocks of a streamed set, never all in memory).
  Accumulated over chunks: np.std would build a float64 copy of the whole set (8 GB for
  mini-ImageNet). Sums of squared uint8 values stay exact in float64 up to ~1e11 pixels, so the result
  does not depend on how the images are split into blocks.
  """
  total = total_sq = count = 0
  for block in [x] if isinstance(x, np.ndarray) else x:
    pixels = block.reshape(-1, block.shape[-1])
    count += len(pixels)
    for start in range(0, len(pixels), 1 << 20):
      chunk = pixels[start : start + (1 << 20)].astype(np.float64)
      total = total + chunk.sum(0)
      total_sq = total_sq + np.square(chunk).sum(0)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
  floor = MIN_STD * 255  # in grey levels, the units of std here
  for c in np.flatnonzero(std < floor):
    if jax.process_index() == 0:
      state = "constant" if std[c] == 0 else f"nearly constant (std {std[c]:.3g} grey levels)"
      print(
        f"Warning: {where} channel {c} is {state}; its std is floored at 1/255 (one grey level) "
        "so normalised inputs stay finite"
      )
  std = np.maximum(std, floor)
  return tuple(float(m) for m in mean / 255), tuple(float(s) for s in std / 255)


# -------------------------------------------------------------------------------- on device
def augment(rng, images, *, crop_pad: int, flip: bool):
  """Random crop (zero padding `crop_pad`) and random horizontal flip, independently per example.

  Works on uint8 or float [B, H, W, C] and keeps the dtype; apply it before `normalize` so the
  padding is black, as torchvision's RandomCrop(padding=...) does. Identity when there is nothing
  to do.
  """
  crop_rng, flip_rng = jax.random.split(rng)
  if crop_pad:
    images = random_crop(crop_rng, images, crop_pad)
  if flip:
    images = random_flip(flip_rng, images)
  return images


def random_crop(rng, images, pad: int):
  """Pads each side by `pad` zeros and crops back to [H, W] at a random offset per example."""
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * pad + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
  return jax.vmap(crop)(padded, offsets)


def random_flip(rng, images, prob: float = 0.5):
  """Mirrors each example left-right with probability `prob`."""
  do_flip = jax.random.bernoulli(rng, prob, (images.shape[0],))
  return jnp.where(do_flip[:, None, None, None], images[:, :, ::-1, :], images)


def normalize(images, mean, std, dtype=jnp.float32):
  """(images / 255 - mean) / std per channel, computed in float32 and returned as `dtype`.

  The std is floored at MIN_STD, as `load` does, so a zero std from elsewhere cannot give inf/NaN.
  """
  x = jnp.asarray(images, jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.maximum(jnp.asarray(std, jnp.float32), MIN_STD)
  return x.astype(dtype)
