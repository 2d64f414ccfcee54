"""Streamed input with grain: every process decodes only its own rows of each global batch.

For datasets larger than host memory (Clothing1M, WebVision) the training set is never loaded whole. A
*source* gives random access to one uint8 image by its index; labels are read up front (they are small and
the noise model, the per-example loss state and the pruning weights need all of them).

The order is the in-memory path's: epoch e visits `train_lib.epoch_permutation(key, e, N)` of the run's
first seed, global batch t holds positions [t·B, (t+1)·B) of it and each device its contiguous slice, so
a streamed run computes what an in-memory run does, whatever the number of processes or reader threads.
The decode work runs on grain reader threads (PIL and numpy release the GIL) with a prefetch buffer, and the
trainer puts the next call's batches on the devices while they run the current one. Everything about the
position in the stream is (epoch, batches consumed): that is the grain iterator state stored in the
checkpoint. Random crop and flip stay on the device (train_lib._preprocess), keyed by the example's position
in the global batch, so both input paths augment identically.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import image_files


# ------------------------------------------------------------------------------------------------ sources
class ArraySource:
  """Images already in memory (digits, npz): streaming them is for tests and for checking equality."""

  def __init__(self, images: np.ndarray):
    self.images = images
    self.shape = tuple(images.shape[1:])

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i]


class FileSource:
  """Image files (an image folder or a list file), decoded and resized to a square on read."""

  def __init__(self, files: image_files.FileList, image_size: int, channels: int = 3):
    self.files, self.image_size, self.channels = files, image_size, channels
    self.shape = (image_size, image_size, channels)

  def __len__(self):
    return len(self.files.paths)

  def __getitem__(self, i):
    return image_files.decode(str(self.files.paths[i]), self.image_size, self.channels)


class TfdsSource:
  """One split of a prepared TFDS dataset through `tfds.data_source` (ArrayRecord random access)."""

  def __init__(self, data_source, image_size: int | None, shape):
    self.source, self.image_size, self.shape = data_source, image_size, tuple(shape)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    from experiments import input_pipeline  # the resize shared with the in-memory path
    image = self.source[int(i)]["image"]
    return image if self.image_size is None else input_pipeline.center_crop_resize(image, self.image_size)


def read(source, indices, workers: int = 0) -> np.ndarray:
  """source[i] for every index, decoded on threads, stacked in order: uint8 [len(indices), *shape]."""
  out = np.empty((len(indices), *source.shape), np.uint8)
  def put(k):
    out[k] = source[int(indices[k])]
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
    list(pool.map(put, range(len(indices))))  # list(): re-raises the first error, naming the file
  return out


def check_readable(source, workers: int = 0):
  """Decodes every image once: (indices that decoded, paths that did not). For `skip_corrupt` streaming,
  where a bad file must be found before its index is in any batch, not halfway through epoch 30."""
  ok = np.ones(len(source), bool)
  def probe(i):
    try:
      source[i]
    except image_files.CorruptImageError:
      ok[i] = False
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
    list(pool.map(probe, range(len(source))))
  return np.flatnonzero(ok), [str(source.files.paths[i]) for i in np.flatnonzero(~ok)]


class Subset:
  """The examples of `source` at `indices` (e.g. training images minus a validation hold-out)."""

  def __init__(self, source, indices):
    self.source, self.indices, self.shape = source, np.asarray(indices), source.shape

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]


def channel_mean_std(source, max_examples: int, seed: int, workers: int = 0):
  """Per-channel mean and std (of x / 255) over every image, or over a seeded sample of `max_examples`
  when there are more: the normalisation of a streamed run, which cannot afford a pass over 1M images."""
  from experiments import input_pipeline
  n = len(source)
  idx = np.arange(n) if n <= max_examples else np.sort(
      np.random.default_rng(seed).choice(n, max_examples, replace=False))
  return input_pipeline.channel_mean_std(read(source, idx, workers), where="streamed training images")


# ------------------------------------------------------------------------------------------------- layout
def process_rows(mesh, shape) -> slice:
  """The rows of a global [rows, ...] array, sharded over the mesh's batch axis, that this process's
  devices hold (contiguous: each device holds one block, and a process's devices are adjacent)."""
  from experiments import train_lib
  sharding = NamedSharding(mesh, P(train_lib.AXIS))
  blocks = sorted((s[0].start or 0, s[0].stop or shape[0])
                  for s in sharding.addressable_devices_indices_map(tuple(shape)).values())
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(f"process {jax.process_index()}'s devices hold non-adjacent rows {blocks} of the batch; "
                     "build the mesh with each process's devices next to each other (jax.devices() order)")
  return slice(start, stop)


def to_devices(mesh, local: np.ndarray, global_rows: int, axis: int = 0):
  """One process's rows of a global array sharded over the batch axis (at `axis`) -> a global jax.Array."""
  from experiments import train_lib
  spec = P(*([None] * axis), train_lib.AXIS)
  shape = (*local.shape[:axis], global_rows, *local.shape[axis + 1:])
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, shape)


# -------------------------------------------------------------------------------------------- train stream
@dataclasses.dataclass
class TrainStream:
  """This process's rows of every global batch of an epoch, decoded ahead on grain reader threads.

  Element i of epoch e is the example at position t·B + rows.start + j of the epoch's permutation, with
  (t, j) = divmod(i, rows per process); batched, element t is (ids int32 [b], images uint8 [b, H, W, C]).
  """
  source: object
  order: object               # epoch -> int array [N], the epoch's permutation of the training set
  batch_size: int             # global
  steps_per_epoch: int
  rows: slice                 # this process's rows of a global batch
  workers: int = 0
  prefetch: int = 64          # batches decoded ahead

  def epoch(self, epoch: int, state: dict | None = None):
    """A grain iterator over the epoch's batches; `state` (from `get_state()`) resumes it mid-epoch."""
    perm = np.asarray(self.order(epoch))
    b = self.rows.stop - self.rows.start
    start, source = self.rows.start, self.source

    def element(i):
      t, j = divmod(i, b)
      example = int(perm[t * self.batch_size + start + j])
      return np.int32(example), source[example]

    options = grain.ReadOptions(num_threads=self.workers or os.cpu_count(),
                                prefetch_buffer_size=max(self.prefetch, 1) * b)
    ds = grain.MapDataset.range(self.steps_per_epoch * b).map(element).to_iter_dataset(options).batch(b)
    it = iter(ds)
    if state is not None:
      it.set_state(state)
    return it

  def position(self, state: dict | None) -> int:
    """Batches consumed in the epoch, read from a grain iterator state (0 for a fresh epoch)."""
    return 0 if state is None else int(state["next_index"]) // (self.rows.stop - self.rows.start)
