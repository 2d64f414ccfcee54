"""How batches reach the devices: one feed interface, two implementations.

The compiled train step receives its global batches as an argument, `{"images": uint8 [.., T, B, H, W, C],
"ids": int32 [.., T, B]}` sharded over the batch axis (ids are positions in the training set: they index the
labels and the per-example loss state). A feed makes them:

  * `DeviceFeed` (input='memory'): the training set sits on every device; each call gathers its batches
    there, in each replica's own order (a leading replica axis R: every seed of a run has its own data order).
  * `StreamFeed` (input='stream'): every process decodes only its devices' rows of each global batch on grain
    reader threads, ahead of the devices, and puts them on its devices; the replicas share the first seed's
    order (no replica axis).

Both visit epoch e in the order `rng.epoch_permutation(key, e, N)`, global batch t being positions
[t·B, (t+1)·B) and each device holding a contiguous slice, so both compute the same run whatever the
number of devices, processes or reader threads, and a resumed feed is rebuilt from the step alone.
Evaluation sets come the same way (`eval_set`), block by block.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Protocol

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import mesh as mesh_lib
from experiments import multihost, rng
from experiments.data import sources


class Feed(Protocol):
  per_replica: bool  # whether batches carry a leading replica axis (each replica its own order)

  def start_epoch(self, epoch: int, batches_done: int = 0) -> None:
    """Positions the feed `batches_done` global batches into epoch `epoch` (0-based)."""

  def next(self, n: int) -> dict:
    """The next `n` global batches, on the devices."""

  def prefetch(self, n: int) -> None:
    """Prepares the `n` batches after those `next` returned last, while the devices run."""


class DeviceFeed:
  """Batches gathered on the devices from a training set replicated on every device."""

  per_replica = True

  def __init__(self, mesh, images: np.ndarray, keys, batch_size: int):
    self.mesh, self.keys, self.batch_size = mesh, keys, batch_size
    self.images = mesh_lib.replicate(mesh, images)
    self.num_train = len(images)
    self._perms = jax.jit(
      jax.vmap(rng.epoch_permutation, (0, None, None)),
      static_argnums=2,
      out_shardings=NamedSharding(mesh, P()),
    )
    out = NamedSharding(mesh, P(None, None, mesh_lib.AXIS))
    self._gather = jax.jit(_gather, static_argnums=(3, 4), out_shardings={"images": out, "ids": out})
    self.perm = self.position = None

  def start_epoch(self, epoch: int, batches_done: int = 0) -> None:
    self.perm = self._perms(self.keys, np.int32(epoch), self.num_train)  # [R, N], on every device
    self.position = batches_done

  def next(self, n: int) -> dict:
    batch = self._gather(self.images, self.perm, np.int32(self.position), n, self.batch_size)
    self.position += n
    return batch

  def prefetch(self, n: int) -> None:
    del n  # the gather is dispatched with the step that uses it


def _gather(images, perm, position, n, batch_size):
  """Batches position..position+n-1 of every replica's order: images [R, n, B, ...], ids [R, n, B]."""
  ids = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, n * batch_size, axis=1)
  ids = ids.reshape(perm.shape[0], n, batch_size)
  return {"images": images[ids], "ids": ids}


@functools.partial(jax.jit, static_argnums=2)
def _host_permutation(key, epoch, num_train):
  return rng.epoch_permutation(key, epoch, num_train)


def host_epoch_order(seed: int, num_train: int):
  """epoch -> the epoch's permutation for seed `seed`, as numpy, computed on this host's CPU (every
  process computes the same one; threefry and the sort behind the permutation are exact)."""
  cpu = jax.local_devices(backend="cpu")[0]
  with jax.default_device(cpu):
    key = jax.random.key(int(seed))
  return lambda epoch: np.asarray(_host_permutation(key, jax.device_put(np.int32(epoch), cpu), num_train))


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

  def epoch(self, epoch: int, batches_done: int = 0):
    """A grain iterator over the epoch's batches, `batches_done` batches in: the position is a function
    of the step alone, so a run can resume on another number of devices or processes."""
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
    it = iter(grain.MapDataset.range(self.steps_per_epoch * b).map(element).to_iter_dataset(options).batch(b))
    if batches_done:
      it.set_state({"next_index": batches_done * b})
    return it


class StreamFeed:
  """Batches decoded on the host, each process its devices' rows, shared by all replicas."""

  per_replica = False

  def __init__(self, mesh, source, seed: int, batch_size: int, steps_per_epoch: int, workers: int, prefetch: int):
    self.mesh, self.batch_size = mesh, batch_size
    self.stream = TrainStream(
      source,
      host_epoch_order(seed, len(source)),
      batch_size,
      steps_per_epoch,
      mesh_lib.process_rows(mesh, batch_size),
      workers=workers,
      prefetch=prefetch,
    )
    self.reading = multihost.Agreement("train_input")  # a read error on one process stops every process
    self.batches = self.pending = None

  def start_epoch(self, epoch: int, batches_done: int = 0) -> None:
    self.batches, self.pending = self.stream.epoch(epoch, batches_done), None

  def _read(self, n):
    parts = self.reading.run(lambda: [next(self.batches) for _ in range(n)])
    ids, images = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    return {
      "images": mesh_lib.to_devices(self.mesh, images, self.batch_size, axis=1),
      "ids": mesh_lib.to_devices(self.mesh, ids, self.batch_size, axis=1),
    }

  def next(self, n: int) -> dict:
    batch, self.pending = self.pending, None
    if batch is None:
      return self._read(n)
    if batch["ids"].shape[0] != n:  # its batches are taken from the epoch's iterator: dropping them would skip them
      raise ValueError(f"next({n}) after prefetch({batch['ids'].shape[0]}): call next with the prefetched size")
    return batch

  def prefetch(self, n: int) -> None:
    if n:
      self.pending = self._read(n)


def train_feed(data, mesh, keys, seeds, batch_size: int, steps_per_epoch: int, cfg) -> Feed:
  """The feed of `data`'s training split: on the devices (data.mode 'memory') or streamed."""
  if data.mode == "memory":
    return DeviceFeed(mesh, sources.materialize(data.train.source).images, keys, batch_size)
  return StreamFeed(
    mesh, data.train.source, seeds[0], batch_size, steps_per_epoch, cfg.input_workers, cfg.input_prefetch
  )


# ------------------------------------------------------------------------------------------- evaluation
class _DeviceEvalSet:
  """An evaluation set in host memory, padded and put on the devices once."""

  def __init__(self, mesh, images, block):
    self.blocks = [mesh_lib.replicate(mesh, images[i : i + block]) for i in range(0, len(images), block)]

  def __iter__(self):
    return iter(self.blocks)


class _StreamEvalSet:
  """An evaluation set read block by block, each process decoding only its devices' rows. Decoding block
  k+1 overlaps the (asynchronously dispatched) evaluation of block k."""

  def __init__(self, mesh, source, indices, block, workers):
    self.mesh, self.source, self.indices, self.block, self.workers = mesh, source, indices, block, workers
    self.rows = mesh_lib.process_rows(mesh, block)

  def __iter__(self):
    reading = multihost.Agreement("eval_input")
    for a in range(0, len(self.indices), self.block):
      rows = self.indices[a : a + self.block][self.rows]
      local = reading.run(lambda rows=rows: sources.read(self.source, rows, self.workers))
      yield mesh_lib.to_devices(self.mesh, local, self.block)


@dataclasses.dataclass
class EvalSet:
  """`n` examples padded to `padded` (a multiple of devices × eval batch), iterated in device blocks."""

  n: int
  padded: int
  blocks: object

  def __iter__(self):
    return iter(self.blocks)


def eval_set(data, mesh, source, indices, eval_batch_size: int, loop_free: bool, workers: int = 0) -> EvalSet:
  """Examples `indices` of `source` for evaluation: on the devices (data.mode 'memory') or streamed."""
  indices = np.asarray(indices)
  n, block = len(indices), mesh.size * eval_batch_size
  padded = -(-n // block) * block
  indices = np.pad(indices, (0, padded - n))  # padding repeats index 0; its outputs are dropped
  if data.mode == "memory":
    images = sources.materialize(source).images[indices]
    # One compiled call per device block where loops are avoided (loop_free), else the whole set at once.
    return EvalSet(n, padded, _DeviceEvalSet(mesh, images, block if loop_free else padded))
  return EvalSet(n, padded, _StreamEvalSet(mesh, source, indices, block, workers))
