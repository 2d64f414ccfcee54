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

import collections
import concurrent.futures
import dataclasses
import os

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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


class InputError(RuntimeError):
  """Reading input failed on some process; raised on every process, so none waits in a collective."""


class Agreement:
  """Host-side agreement of all processes on the outcome of a step that each ran alone (reading its rows).

  Each process posts its error ('' for none) to JAX's distributed key-value store and reads everyone's:
  no device collective, so it never queues behind the devices' work. Processes call it the same number
  of times in the same order (the loop is deterministic), which names the keys.
  """

  _calls = collections.Counter()  # per name, over the process's lifetime: every key is written once

  def __init__(self, name: str):
    self.name = name

  def gather(self, value: str) -> list[str]:
    if jax.process_count() == 1:
      return [value]
    from jax._src import distributed

    client = distributed.global_state.client
    key = f"robust_losses/{self.name}/{Agreement._calls[self.name]}"
    Agreement._calls[self.name] += 1
    client.key_value_set(f"{key}/{jax.process_index()}", "=" + value)  # '=': never an empty value
    return [client.blocking_key_value_get(f"{key}/{p}", 3_600_000)[1:] for p in range(jax.process_count())]

  def run(self, fn):
    """fn() on this process; if it raised here or anywhere, InputError on every process."""
    try:
      out, error = fn(), ""
    except Exception as e:  # noqa: BLE001 - reported to every process below, then re-raised
      out, error, exc = None, f"{type(e).__name__}: {e}", e
    errors = [(p, m) for p, m in enumerate(self.gather(error)) if m]
    if errors:
      if jax.process_count() == 1:
        raise exc
      raise InputError("; ".join(f"process {p}: {m}" for p, m in errors))
    return out


def check_readable(source, workers: int = 0):
  """Decodes every image once: (indices that decoded, paths that did not). The processes share the work
  (process p checks every P-th image, in chunks) and the result, so all of them keep the same examples."""
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

  bad = Agreement("check_readable").run(check)
  everyone = Agreement("check_readable_result").gather(",".join(map(str, bad)))
  bad = sorted(int(i) for part in everyone for i in part.split(",") if i)
  ok = np.ones(len(source), bool)
  ok[bad] = False
  return np.flatnonzero(ok), [str(source.files.paths[i]) for i in bad]


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
  idx = (
    np.arange(n) if n <= max_examples else np.sort(np.random.default_rng(seed).choice(n, max_examples, replace=False))
  )
  blocks = (read(source, idx[a : a + 512], workers) for a in range(0, len(idx), 512))  # a block at a time
  return input_pipeline.channel_mean_std(blocks, where="streamed training images")


# ------------------------------------------------------------------------------------------------- layout
def process_rows(mesh, shape) -> slice:
  """The rows of a global [rows, ...] array, sharded over the mesh's batch axis, that this process's
  devices hold (contiguous: each device holds one block, and a process's devices are adjacent)."""
  from experiments import train_lib

  sharding = NamedSharding(mesh, P(train_lib.AXIS))
  blocks = sorted(
    (s[0].start or 0, s[0].stop or shape[0]) for s in sharding.addressable_devices_indices_map(tuple(shape)).values()
  )
  if not blocks:
    raise ValueError(
      f"process {jax.process_index()} has no device in the mesh ({mesh.size} of "
      f"{jax.device_count()} devices); with several processes use num_devices=0 (all)"
    )
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(
      f"process {jax.process_index()}'s devices hold non-adjacent rows {blocks} of the batch; "
      "build the mesh with each process's devices next to each other (jax.devices() order)"
    )
  return slice(start, stop)


def to_devices(mesh, local: np.ndarray, global_rows: int, axis: int = 0):
  """One process's rows of a global array sharded over the batch axis (at `axis`) -> a global jax.Array."""
  from experiments import train_lib

  spec = P(*([None] * axis), train_lib.AXIS)
  shape = (*local.shape[:axis], global_rows, *local.shape[axis + 1 :])
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, shape)


# -------------------------------------------------------------------------------------------- train stream
@dataclasses.dataclass
class TrainStream:
  """This process's rows of every global batch of an epoch, decoded ahead on grain reader threads.

  Element i of epoch e is the example at position t·B + rows.start + j of the epoch's permutation, with
  (t, j) = divmod(i, rows per process); batched, element t is (ids int32 [b], images uint8 [b, H, W, C]).
  """

  source: object
  order: object  # epoch -> int array [N], the epoch's permutation of the training set
  batch_size: int  # global
  steps_per_epoch: int
  rows: slice  # this process's rows of a global batch
  workers: int = 0
  prefetch: int = 64  # batches decoded ahead

  def epoch(self, epoch: int, state: dict | None = None):
    """A grain iterator over the epoch's batches; `state` (from `get_state()`) resumes it mid-epoch."""
    perm = np.asarray(self.order(epoch))
    b = self.rows.stop - self.rows.start
    start, source = self.rows.start, self.source

    def element(i):
      t, j = divmod(i, b)
      example = int(perm[t * self.batch_size + start + j])
      return np.int32(example), source[example]

    options = grain.ReadOptions(
      num_threads=self.workers or os.cpu_count(), prefetch_buffer_size=max(self.prefetch, 1) * b
    )
    ds = grain.MapDataset.range(self.steps_per_epoch * b).map(element).to_iter_dataset(options).batch(b)
    it = iter(ds)
    if state is not None:
      it.set_state(state)
    return it

  def state_at(self, batches: int) -> dict:
    """The grain iterator state `batches` batches into an epoch: the position is a function of the step
    alone, so a run can resume on another number of devices or processes."""
    return {"next_index": batches * (self.rows.stop - self.rows.start)}
