"""TFDS datasets through `tfds.data_source` (ArrayRecord random access): no TensorFlow at run time.

Preparing a dataset once does need TensorFlow and internet (`tfds build NAME --file_format=array_record`);
an unprepared dataset is a `DatasetNotPreparedError` whose message gives that command.
"""

from __future__ import annotations

import jax
import numpy as np
import tensorflow_datasets as tfds

from experiments.data import sources
from experiments.data.specs import SPECS


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not on disk in the ArrayRecord format that `tfds.data_source` reads."""


def open_split(full_name, split, data_dir, *, image_size, noisy_key=None, num_classes=None):
  """((source, labels int32 [N], noisy labels or None), the dataset's class count) of one split.

  Images stay undecoded until read. A given `num_classes` must equal the dataset's (checked before any
  label is read).
  """
  source = data_source(full_name, split, data_dir)
  dataset_classes = source.dataset_info.features["label"].num_classes
  if num_classes is not None and num_classes != dataset_classes:
    raise ValueError(
      f"data.num_classes={num_classes} does not match {full_name!r}, which has {dataset_classes} classes; "
      "leave data.num_classes at 0 to use the dataset's"
    )
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
  return (sources.TfdsSource(source, image_size, shape), labels, noisy), dataset_classes


def train_images_bytes(full_name, split, data_dir, image_size) -> int:
  """Decoded size of a split's images, read from the metadata."""
  source = data_source(full_name, split, data_dir)
  shape = source.dataset_info.features["image"].shape
  if image_size:
    shape = (image_size, image_size, shape[-1])
  return len(source) * int(np.prod(shape))


def _read_labels(source, noisy_key):
  """(labels, noisy labels or None) of every example of `source`, read in blocks of 1024 records."""
  n = len(source)
  labels = np.empty(n, np.int32)
  noisy = None if noisy_key is None else np.empty(n, np.int32)
  for start in range(0, n, 1024):
    for i, example in enumerate(source.__getitems__(list(range(start, min(start + 1024, n)))), start):
      labels[i] = example["label"]
      if noisy is not None:
        noisy[i] = example[noisy_key]
  return labels, noisy


def data_source(full_name, split, data_dir):
  try:
    return tfds.data_source(full_name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    # TFDS reports a missing dataset confusingly (e.g. NotImplementedError about TFRecord), so check
    # directly and say how to prepare it. Anything else is a genuine error and propagates.
    if tfds.builder(full_name, data_dir=data_dir).is_prepared():
      raise
    raise DatasetNotPreparedError(_not_prepared_message(full_name, data_dir)) from e


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
  if SPECS[name].manual_download:
    message += (
      f"\n{name} also needs files downloaded by hand first; add --manual_dir=DIR and see "
      f"https://www.tensorflow.org/datasets/catalog/{name} for what to put there."
    )
  return message
