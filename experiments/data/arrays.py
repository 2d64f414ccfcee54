"""Datasets that are numpy arrays: scikit-learn's bundled digits and keras-style .npz files.

Also the label checks every dataset shares (range, inferred class count).
"""

from __future__ import annotations

import zipfile

import jax
import numpy as np
import sklearn.datasets
import sklearn.model_selection

from experiments.data.specs import NPZ_ARRAYS


def load_digits():
  """sklearn's 1797 8x8 digits with a fixed stratified 70/30 split: 1257 train / 540 test."""
  digits = sklearn.datasets.load_digits()
  # Pixel values are counts 0..16; rescale so every dataset shares the uint8 0..255 convention.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
    images, digits.target.astype(np.int32), test_size=0.3, stratify=digits.target, random_state=0
  )
  return (x_train, y_train), (x_test, y_test)


def load_npz(path):
  """Reads and checks a keras-style .npz; every error names the file and the array at fault."""
  try:
    # allow_pickle=False: an .npz is a data file, reading it should never execute code.
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a valid .npz file ({e})") from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise ValueError(f"{path}: holds a single array, not an .npz archive of {list(NPZ_ARRAYS)}")
  with npz:
    missing = [k for k in NPZ_ARRAYS if k not in npz.files]
    if missing:
      raise ValueError(f"{path}: missing arrays {missing}; the file has {npz.files}, needs {list(NPZ_ARRAYS)}")
    try:
      arrays = {k: npz[k] for k in NPZ_ARRAYS}
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


def infer_num_classes(path, y_train, y_test):
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


def check_label_range(source, num_classes, **labels):
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
