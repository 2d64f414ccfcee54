"""What each dataset is (its spec), and the checks of a data config that need no data.

A data config is the `config.data` sub-dict (configs/default.py documents every key). Empty strings and
zeros mean "the dataset's default".
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Spec:
  """What differs between datasets. For tuples of choices, the first entry is the default."""

  kind: str  # how it is read: 'arrays' (digits, npz), 'files' (image folder / list files) or 'tfds'
  flip: bool  # horizontal flip preserves the label (not for digits)
  crop_pad: int | None = None  # None: image_size // 8 (4 px at 32 px, as on CIFAR)
  configs: tuple[str, ...] = ()  # TFDS builder configs
  train_splits: tuple[str, ...] = ("train",)
  test_split: str = "test"
  noisy_label_keys: tuple[str, ...] = ()
  image_size: int | None = None  # set for datasets stored at varying sizes: resized on load
  manual_download: bool = False  # `tfds build` needs files fetched by hand first
  # Known up front so `validate` can reject a wrong num_classes before loading; the TFDS metadata is
  # checked against it too. None: inferred from the labels (npz, files).
  num_classes: int | None = None


# Controlled Noisy Web Labels ships one training split per web-noise level (train_00 ... train_80);
# each is a different image set, so the level is chosen with `train_split`.
_CNWL_SPLITS = tuple(f"train_{p:02d}" for p in (40, 0, 5, 10, 15, 20, 30, 50, 60, 80))

SPECS = {
  # 8x8 digits: a 1 px shift is 12% of the image and digits are not mirror-symmetric, so no
  # augmentation at all.
  "digits": Spec("arrays", flip=False, crop_pad=0, num_classes=10),
  # Unknown content in the mnist.npz layout: treated like digits (no flip), crop pad = size // 8.
  "npz": Spec("arrays", flip=False),
  "mnist": Spec("tfds", flip=False, crop_pad=2, num_classes=10),
  "fashion_mnist": Spec("tfds", flip=True, crop_pad=2, num_classes=10),
  "cifar10": Spec("tfds", flip=True, crop_pad=4, num_classes=10),
  "cifar100": Spec("tfds", flip=True, crop_pad=4, num_classes=100),
  "svhn_cropped": Spec("tfds", flip=False, crop_pad=4, num_classes=10),
  # CIFAR-N (Wei et al., ICLR 2022): human labels exist for the train split only.
  "cifar10_n": Spec(
    "tfds",
    flip=True,
    crop_pad=4,
    manual_download=True,
    num_classes=10,
    noisy_label_keys=("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"),
  ),
  "cifar100_n": Spec(
    "tfds", flip=True, crop_pad=4, manual_download=True, num_classes=100, noisy_label_keys=("noise_label",)
  ),
  # Imagewang = Imagenette + Imagewoof (20 classes); its validation split, used as the test set,
  # holds Imagewoof images only. Images come at varying sizes: centre crop + resize on load.
  "imagewang": Spec(
    "tfds",
    flip=True,
    configs=("160px", "320px", "full-size"),
    test_split="validation",
    image_size=64,
    num_classes=20,
  ),
  # Red/Blue mini-ImageNet (Jiang et al., ICML 2020): 'label' is the web label and there is no
  # clean one; the 'validation' split is clean and serves as the test set. Stored at 84x84.
  "controlled_noisy_web_labels": Spec(
    "tfds",
    flip=True,
    configs=("mini_imagenet_red", "mini_imagenet_blue"),
    train_splits=_CNWL_SPLITS,
    test_split="validation",
    noisy_label_keys=("label",),
    image_size=84,
    manual_download=True,
    num_classes=100,
  ),
  # Image files as users have them (image_files.py): class sub-folders, or `path label` list files
  # (Clothing1M, WebVision, Food-101N). Natural photos: flip; decoded to image_size x image_size.
  "image_folder": Spec("files", flip=True),
  "image_list": Spec("files", flip=True),
}
DATASETS = tuple(SPECS)
INPUT_MODES = ("memory", "stream", "auto")
# Augmentation: 'default' is the dataset's (Spec.flip, Spec.crop_pad); the others override it.
AUGMENTATIONS = ("default", "none", "crop", "flip", "crop_flip")
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def opt(cfg, key):
  """A data-config value, or None where it is unset ('' or 0 mean the dataset default)."""
  value = cfg[key]
  return value if value not in ("", 0, None) or isinstance(value, bool) else None


def tfds_name(cfg) -> str:
  """The TFDS builder name with its config, e.g. 'imagewang/160px'."""
  spec = SPECS[cfg.name]
  return f"{cfg.name}/{opt(cfg, 'tfds_config') or spec.configs[0]}" if spec.configs else cfg.name


def image_size(cfg) -> int | None:
  """The side images are resized to (None: kept as stored)."""
  return opt(cfg, "image_size") or SPECS[cfg.name].image_size


def augmentation(cfg, height: int) -> tuple[int, bool]:
  """(random-crop zero padding, random horizontal flip) for images of `height` rows."""
  spec = SPECS[cfg.name]
  pad = spec.crop_pad if spec.crop_pad is not None else height // 8
  if cfg.augment == "default":
    return pad, spec.flip
  crop, flip = cfg.augment in ("crop", "crop_flip"), cfg.augment in ("flip", "crop_flip")
  return (max(pad, 1) if crop else 0), flip


def validate(cfg) -> None:
  """Cheap checks of a data config, run before anything is loaded or compiled."""
  name = cfg.name
  if name not in SPECS:
    raise ValueError(f"data.name={name!r} is unknown; valid choices: {list(DATASETS)}")
  spec = SPECS[name]
  path, size, num_classes = cfg.path, cfg.image_size, cfg.num_classes
  lists = {"train_list": cfg.train_list, "test_list": cfg.test_list, "val_list": cfg.val_list}
  if name != "image_list" and any(lists.values()):
    raise ValueError(
      f"{[f'data.{k}' for k, v in lists.items() if v]} given, but list files belong to data.name='image_list' "
      f"(data.name={name!r})"
    )
  if spec.kind == "files":
    if not path or not os.path.isdir(path):
      layout = (
        "with train/<class>/*, test/<class>/* and optionally val/<class>/*"
        if name == "image_folder"
        else "that the paths in the list files are relative to"
      )
      raise ValueError(
        f"data.name={name!r} needs data.path, a directory {layout}; got data.path={path!r}"
        + ("" if not path else " (no such directory)")
      )
    if size < 0:  # 0: inferred from the files when every image has the same square size
      raise ValueError(
        f"data.name={name!r} decodes images to image_size x image_size: set data.image_size >= 1, or 0 to use "
        f"the images' own size when they all share one (got {size!r})"
      )
    if name == "image_list":
      for key in ("train_list", "test_list"):
        if not lists[key]:
          raise ValueError(f"data.name='image_list' needs data.{key}, a file of `path label` lines")
      for key, list_path in lists.items():
        if list_path and not os.path.isfile(list_path):
          raise ValueError(f"data.{key}={list_path!r}: no such file")
  # bool is an int subclass; num_classes=True is a config slip, not 1 class.
  if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
    raise ValueError(f"data.num_classes={num_classes!r} must be an integer >= 2 (or 0 to use the dataset's own count)")
  if num_classes:
    if num_classes < 2:
      raise ValueError(
        f"data.num_classes={num_classes!r} is out of range; valid range is >= 2 (or 0 to use the dataset's own count)"
      )
    if spec.num_classes is not None and num_classes != spec.num_classes:
      raise ValueError(
        f"data.num_classes={num_classes} does not match {name!r}, which has {spec.num_classes} classes; "
        "leave data.num_classes at 0 to use the dataset's"
      )
  if name == "npz":
    if not path:
      raise ValueError(
        f"data.name='npz' needs data.path, a .npz file with arrays {', '.join(NPZ_ARRAYS)} (the keras mnist.npz layout)"
      )
    if not os.path.isfile(path):
      raise ValueError(f"data.path={path!r}: no such file")
  key = cfg.real_label_key
  if key and key not in spec.noisy_label_keys:
    if spec.noisy_label_keys:
      raise ValueError(
        f"data.real_label_key={key!r} is not a label set of {name!r}; valid choices: {list(spec.noisy_label_keys)}"
      )
    with_labels = [n for n, s in SPECS.items() if s.noisy_label_keys]
    raise ValueError(
      f"data.real_label_key={key!r} was given, but {name!r} has no human/web labels; datasets that do: {with_labels}"
    )
  if cfg.tfds_config and cfg.tfds_config not in spec.configs:
    raise ValueError(
      f"data.tfds_config={cfg.tfds_config!r} is not a config of {name!r}; valid choices: "
      f"{list(spec.configs) or 'none (leave it unset)'}"
    )
  if cfg.train_split and cfg.train_split not in spec.train_splits:
    raise ValueError(
      f"data.train_split={cfg.train_split!r} is not a training split of {name!r}; valid choices: "
      f"{list(spec.train_splits)}"
    )
  if size and spec.kind != "files":
    if spec.image_size is None:
      resizable = [n for n, s in SPECS.items() if s.image_size or s.kind == "files"]
      raise ValueError(
        f"data.image_size={size!r} was given, but {name!r} has a fixed image size; resizing applies to {resizable}"
      )
  if size < 0:
    raise ValueError(f"data.image_size={size!r} is out of range; valid range is >= 1 (0: the dataset's)")
  if cfg.augment not in AUGMENTATIONS:
    raise ValueError(f"data.augment={cfg.augment!r} is unknown; valid choices: {list(AUGMENTATIONS)}")
  if cfg.input not in INPUT_MODES:
    raise ValueError(f"data.input={cfg.input!r} is unknown; valid choices: {list(INPUT_MODES)}")
  if cfg.val_size:
    raise ValueError(
      f"data.val_size={cfg.val_size!r}: the clean hold-out was replaced by one validation split for noisy and "
      "clean labels; set data.val_size=0 and use the top-level --config.val_fraction=F (a share of the training "
      "set, e.g. 0.1) with --config.val_labels=clean for a clean hold-out, or the default val_labels=noisy"
    )
  for key, low in (
    ("input_workers", 0),
    ("input_prefetch", 1),
    ("stats_max_examples", 1),
  ):
    if not cfg[key] >= low:
      raise ValueError(f"data.{key}={cfg[key]!r} is out of range; valid range is >= {low}")
  if not cfg.input_memory_gb > 0:
    raise ValueError(f"data.input_memory_gb={cfg.input_memory_gb!r} is out of range; valid range is > 0")
