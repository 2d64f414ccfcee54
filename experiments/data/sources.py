"""Random-access image sources: `source[i]` is one decoded uint8 image [H, W, C], `len(source)` examples.

Every dataset is opened as sources (labels are read up front: they are small, and the noise model, the
per-example loss state and the pruning weights need all of them). A run in host memory reads each source
whole once (`materialize`); a streamed run reads the rows each batch needs.
"""

from __future__ import annotations

import concurrent.futures
import os

import jax
import numpy as np

from experiments import multihost
from experiments.data import image_files


class ArraySource:
  """Images already in host memory (digits, npz, or any source after `materialize`)."""

  def __init__(self, images: np.ndarray):
    self.images = images
    self.shape = tuple(images.shape[1:])

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i]

  def read_many(self, indices) -> np.ndarray:
    return self.images[np.asarray(indices)]


class FileSource:
  """Image files (an image folder or a list file), decoded and resized to a square on read."""

  def __init__(self, files: image_files.FileList, image_size: int, channels: int = 3):
    self.files, self.image_size, self.channels = files, image_size, channels
    self.shape = (image_size, image_size, channels)

  def __len__(self):
    return len(self.files.paths)

  def __getitem__(self, i):
    return image_files.decode(str(self.files.paths[i]), self.image_size, self.channels)

  def name(self, i) -> str:
    return str(self.files.paths[i])


class TfdsSource:
  """One split of a prepared TFDS dataset through `tfds.data_source` (ArrayRecord random access)."""

  def __init__(self, data_source, image_size: int | None, shape):
    self.source, self.image_size, self.shape = data_source, image_size, tuple(shape)

  def __len__(self):
    return len(self.source)

  def _image(self, example):
    image = example["image"]
    return image if self.image_size is None else image_files.center_crop_resize(image, self.image_size)

  def __getitem__(self, i):
    return self._image(self.source[int(i)])

  def read_many(self, indices) -> np.ndarray:
    # One ArrayRecord call per block of records amortises its per-call overhead.
    out = np.empty((len(indices), *self.shape), np.uint8)
    for start in range(0, len(indices), 1024):
      chunk = [int(i) for i in indices[start : start + 1024]]
      for k, example in enumerate(self.source.__getitems__(chunk), start):
        out[k] = self._image(example)
    return out


class Subset:
  """The examples of `source` at `indices` (e.g. the training images minus a hold-out)."""

  def __init__(self, source, indices):
    self.source, self.indices, self.shape = source, np.asarray(indices), source.shape

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]

  def name(self, i) -> str:
    return self.source.name(self.indices[i])

  def read_many(self, indices) -> np.ndarray:
    return read(self.source, self.indices[np.asarray(indices)])


def read(source, indices, workers: int = 0) -> np.ndarray:
  """source[i] for every index, stacked in order: uint8 [len(indices), *shape]. Sources with a block read
  use it; others decode on threads (PIL and numpy release the GIL)."""
  if hasattr(source, "read_many"):
    return source.read_many(indices)
  out = np.empty((len(indices), *source.shape), np.uint8)

  def put(k):
    out[k] = source[int(indices[k])]

  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
    list(pool.map(put, range(len(indices))))  # list(): re-raises the first error, naming the file
  return out


def materialize(source, workers: int = 0) -> ArraySource:
  """The whole source decoded into host memory, in blocks (threads within a block)."""
  if isinstance(source, ArraySource):
    return source
  images = np.empty((len(source), *source.shape), np.uint8)
  for start in range(0, len(source), 4096):
    images[start : start + 4096] = read(source, np.arange(start, min(start + 4096, len(source))), workers)
  return ArraySource(images)


def check_readable(source, workers: int = 0):
  """Decodes every image once: (indices that decoded, names of those that did not). The processes share
  the work (process p checks every P-th image, in chunks) and the result, so all keep the same examples."""
  mine = np.arange(jax.process_index(), len(source), jax.process_count())

  def probe(chunk):
    bad = []
    for i in chunk:
      try:
        source[int(i)]
      except image_files.CorruptImageError:
        bad.append(int(i))
    return bad

  def check():
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
      # Chunks of 64: one future per image would cost ~2 GB of futures for 1M images.
      return sorted(i for bad in pool.map(probe, np.array_split(mine, max(len(mine) // 64, 1))) for i in bad)

  bad = multihost.Agreement("check_readable").run(check)
  everyone = multihost.Agreement("check_readable_result").gather(",".join(map(str, bad)))
  bad = sorted(int(i) for part in everyone for i in part.split(",") if i)
  ok = np.ones(len(source), bool)
  ok[bad] = False
  return np.flatnonzero(ok), [source.name(i) for i in bad]
