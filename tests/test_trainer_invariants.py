"""Trainer invariants that no other test guards (issue 24): each test fails on a one-line bug that leaves
every other test passing. The bug each one catches is named in its comment; each was planted and seen
failing (commands in the commit message).

  * the epoch order: a permutation, reshuffled every epoch, the same on any number of devices or
    processes, in memory or streamed, and after a resume;
  * epoch averages over the finite steps only, when non-finite steps are skipped;
  * the config guard: a key on one side only is a difference (workdir guard and sweep);
  * augmentation keyed by the global example position: the same augmented batch and training on 1 and 4
    devices (and 1 or 2 processes' rows).
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl
from configs import digits
from experiments import checkpoints, data, multihost, records, rng, runs, sweep, train, train_lib
from experiments import settings as run_settings
from experiments.data import feeds, sources
from experiments.mesh import AXIS, make_mesh, replicate, to_devices

# ------------------------------------------------------------------------------------------ epoch order
N, B = 100, 16  # 6 steps an epoch; the last 4 examples of each epoch's order are dropped
SPE = N // B
EPOCHS = 4


def expected_order(seed: int, epoch: int) -> np.ndarray:
  """The documented order, written out from jax.random alone (not via experiments.rng): epoch e of seed s
  visits jax.random.permutation(fold_in(fold_in(key(s), 1 = the 'data' stream), e), N)."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), epoch)
  return np.asarray(jax.random.permutation(key, N))


def index_images():
  """Image i holds the value i, so a batch's images tell which examples it holds."""
  return np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None], (N, 2, 2, 1)).copy()


def check_epoch_orders(orders: dict, seed: int):
  """orders: {epoch: ids visited, in order [SPE * B]}."""
  for epoch, ids in orders.items():
    assert len(set(ids.tolist())) == len(ids) == SPE * B and ids.min() >= 0 and ids.max() < N
    full = expected_order(seed, epoch)
    np.testing.assert_array_equal(np.sort(full), np.arange(N))  # the expectation itself is a permutation
    np.testing.assert_array_equal(ids, full[: SPE * B], err_msg=f"epoch {epoch}")
  # Reshuffled: no two epochs visit the examples in the same order.
  for a in orders:
    for b in orders:
      if a < b:
        assert (orders[a] != orders[b]).mean() > 0.5, (a, b)


def device_feed_orders(num_devices: int, seeds, chunks=(SPE,)):
  """{epoch: ids [R, SPE*B]} from DeviceFeed on `num_devices` devices, read in calls of `chunks` steps."""
  mesh = make_mesh(jax.devices()[:num_devices])
  feed = feeds.DeviceFeed(mesh, index_images(), rng.replica_keys(seeds), B)
  out = {}
  for epoch in range(EPOCHS):
    feed.start_epoch(epoch)
    parts = []
    for n in chunks:
      batch = feed.next(n)
      ids, images = np.asarray(batch["ids"]), np.asarray(batch["images"])
      assert ids.shape == (len(seeds), n, B)
      np.testing.assert_array_equal(images[..., 0, 0, 0], ids)  # the images are those of the ids
      parts.append(ids)
    out[epoch] = np.concatenate(parts, axis=1).reshape(len(seeds), -1)
  return out, feed


# Catches: rng.epoch_permutation without the epoch,
#   `return jax.random.permutation(jax.random.fold_in(stream(key, "data"), epoch), num_train)` ->
#   `return jax.random.permutation(stream(key, "data"), num_train)`
# (every epoch the same order; the streamed-vs-in-memory and resume tests still agree with each other).
@pytest.mark.parametrize("num_devices", [1, 4])
def test_in_memory_epoch_order_is_a_fresh_permutation_each_epoch_on_any_device_count(num_devices):
  seeds = [3, 7]  # every replica its own order
  orders, feed = device_feed_orders(num_devices, seeds, chunks=(2, 3, 1))
  for r, seed in enumerate(seeds):
    check_epoch_orders({e: ids[r] for e, ids in orders.items()}, seed)
  assert (orders[0][0] != orders[0][1]).mean() > 0.5
  # Resumed `done` batches into an epoch (a new feed, as after a restart): the rest of the same order.
  resumed = feeds.DeviceFeed(feed.mesh, index_images(), rng.replica_keys(seeds), B)
  for epoch, done in ((0, 1), (2, 4)):
    resumed.start_epoch(epoch, done)
    rest = np.asarray(resumed.next(SPE - done)["ids"]).reshape(len(seeds), -1)
    np.testing.assert_array_equal(rest, orders[epoch][:, done * B :])


@pytest.mark.parametrize("num_devices", [1, 4])
def test_streamed_epoch_order_is_a_fresh_permutation_each_epoch_on_any_device_count(num_devices):
  # The same rng bug as above. The streamed feed follows the first seed's order.
  seed = 3
  mesh = make_mesh(jax.devices()[:num_devices])
  source = sources.ArraySource(index_images())
  feed = feeds.StreamFeed(mesh, source, seed, B, SPE, workers=2, prefetch=2)
  orders = {}
  for epoch in range(EPOCHS):
    feed.start_epoch(epoch)
    parts = []
    chunks = (2, 3, 1)
    for i, n in enumerate(chunks):
      batch = feed.next(n)
      # Read ahead the next call's batches as the loop does: the order must not change.
      feed.prefetch(chunks[i + 1] if i + 1 < len(chunks) else 0)
      ids = np.asarray(batch["ids"])
      np.testing.assert_array_equal(np.asarray(batch["images"])[..., 0, 0, 0], ids)
      parts.append(ids.reshape(-1))
    orders[epoch] = np.concatenate(parts)
  check_epoch_orders(orders, seed)
  # Resumed mid-epoch (a new feed): the rest of the same order.
  resumed = feeds.StreamFeed(mesh, source, seed, B, SPE, workers=1, prefetch=1)
  resumed.start_epoch(1, 4)
  np.testing.assert_array_equal(np.asarray(resumed.next(SPE - 4)["ids"]).reshape(-1), orders[1][4 * B :])


def test_streamed_next_of_another_size_than_the_prefetch_is_an_error():
  # The prefetched batches were taken from the epoch iterator: silently dropping them would skip them.
  feed = feeds.StreamFeed(make_mesh(jax.devices()[:1]), sources.ArraySource(index_images()), 0, B, SPE, 1, 1)
  feed.start_epoch(0)
  feed.next(1)
  feed.prefetch(2)
  with pytest.raises(ValueError, match=r"next\(3\) after prefetch\(2\)"):
    feed.next(3)


def test_two_processes_rows_recombine_to_the_one_process_order():
  # The same rng bug. Two processes of 2 devices each read rows [0, 8) and [8, 16) of every global batch
  # (mesh.process_rows); recombined they are the expected order, also when each resumes mid-epoch.
  seed = 5
  source = sources.ArraySource(index_images())
  order = feeds.host_epoch_order(seed, N)
  halves = [feeds.TrainStream(source, order, B, SPE, rows, workers=2) for rows in (slice(0, 8), slice(8, 16))]
  orders = {}
  for epoch in range(EPOCHS):
    first, second = (list(h.epoch(epoch)) for h in halves)
    assert len(first) == len(second) == SPE
    batches = [np.concatenate([a[0], b[0]]) for a, b in zip(first, second)]
    for (ids_a, images_a), (ids_b, images_b) in zip(first, second):
      np.testing.assert_array_equal(np.concatenate([images_a, images_b])[:, 0, 0, 0], np.concatenate([ids_a, ids_b]))
    orders[epoch] = np.concatenate(batches)
    done = 2
    rest = [np.concatenate([a[0], b[0]]) for a, b in zip(*(list(h.epoch(epoch, done)) for h in halves))]
    np.testing.assert_array_equal(np.concatenate(rest), orders[epoch][done * B :])
  check_epoch_orders(orders, seed)


# -------------------------------------------------------------------------------------- config guard
def tiny(**overrides):
  c = digits.get_config()
  c.num_epochs = 1
  c.batch_size = 64
  c.progress = False
  for key, value in overrides.items():
    c[key] = value
  return c


def stored_json(config, extra=None) -> dict:
  """What guard_workdir writes as config.json."""
  return checkpoints.run_record(config, extra)


# Each case: (stored config made from the current one, the difference): they differ only by a key present
# on one side. The values are not None: a key stored as null and absent now compare equal (dict.get).
ONE_SIDED = {
  # A grouped sweep row's run stores its noise settings; a plain run of the same config has none.
  "stored has noise_settings": (
    lambda c: stored_json(c, {"noise_settings": [{"kind": "symmetric", "rate": 0.4}]}),
    "noise_settings: [{'kind': 'symmetric', 'rate': 0.4}] -> None",
  ),
  # A key of an older or newer config version (top level and nested).
  "stored has an extra key": (lambda c: {**stored_json(c), "label_smoothing": 0.1}, "label_smoothing: 0.1 -> None"),
  "current has an extra key": (
    lambda c: {k: v for k, v in stored_json(c).items() if k != "weight_decay"},
    "weight_decay: None -> 0.0005",
  ),
  "current has an extra nested key": (
    lambda c: {**stored_json(c), "data": {k: v for k, v in stored_json(c)["data"].items() if k != "augment"}},
    "data.augment: None -> 'default'",
  ),
}


# Catches: config_differences comparing the keys both sides have,
#   `for k in sorted(set(mine) | set(theirs))` -> `for k in sorted(set(mine) & set(theirs))`.
@pytest.mark.parametrize("case", list(ONE_SIDED))
def test_config_differences_counts_a_key_on_one_side_only(case):
  stored_of, expected = ONE_SIDED[case]
  c = tiny()
  assert checkpoints.config_differences(stored_json(c), c) == []  # the guard's own file is no difference
  assert checkpoints.config_differences(stored_of(c), c) == [expected]
  # The reverse direction of the noise_settings case: a plain run's files, reused by a grouped row.
  if case == "stored has noise_settings":
    extra = {"noise_settings": [{"kind": "symmetric", "rate": 0.4}]}
    assert checkpoints.config_differences(stored_json(c), c, extra) == [
      "noise_settings: None -> [{'kind': 'symmetric', 'rate': 0.4}]"
    ]


@pytest.mark.parametrize("case", list(ONE_SIDED))
def test_workdir_guard_refuses_a_run_with_a_key_on_one_side_only(tmp_path, case):
  # The same bug; through train_and_evaluate, which guards the workdir before compiling anything.
  stored_of, expected = ONE_SIDED[case]
  c = tiny()
  os.makedirs(tmp_path / "w")
  with open(tmp_path / "w" / "config.json", "w") as f:
    json.dump(stored_of(c), f)
  with pytest.raises(checkpoints.ConfigMismatchError, match=r"different config \(" + _re(expected) + r"\)"):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_workdir_guard_refuses_a_plain_run_in_a_grouped_runs_workdir_and_the_reverse(tmp_path):
  # The same bug, both directions through the guard's `extra` (what a sweep row passes as noise settings).
  grouped = {"noise_settings": [{"kind": "symmetric", "rate": 0.0}, {"kind": "symmetric", "rate": 0.4}]}
  c = tiny()
  checkpoints.guard_workdir(str(tmp_path / "a"), c, grouped)
  with pytest.raises(checkpoints.ConfigMismatchError, match="noise_settings"):
    checkpoints.guard_workdir(str(tmp_path / "a"), c)
  checkpoints.guard_workdir(str(tmp_path / "b"), c)
  with pytest.raises(checkpoints.ConfigMismatchError, match="noise_settings"):
    checkpoints.guard_workdir(str(tmp_path / "b"), c, grouped)
  checkpoints.guard_workdir(str(tmp_path / "a"), c, grouped)  # the same config is accepted


# Catches: every process reading config.json while process 0 rewrites it. Under load process 1 once read the
# file between process 0's open("w") and its write, stopped on a JSON error, and process 0 waited for it.
def test_only_process_0_reads_and_writes_the_workdirs_config(tmp_path, monkeypatch):
  c, w = tiny(), tmp_path / "w"
  os.makedirs(w)
  (w / "config.json").write_text("")  # what a reader saw between process 0's open("w") and its write
  posted = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(multihost.Agreement, "gather", lambda self, value: posted.append(value) or ["", value])
  checkpoints.guard_workdir(str(w), c)  # process 1 neither reads nor writes; it waits for process 0's verdict
  assert posted == [""] and (w / "config.json").read_text() == ""
  verdict = "workdir 'w' holds a run of a different config (seed: 1 -> 0)."
  monkeypatch.setattr(multihost.Agreement, "gather", lambda self, value: [verdict, value])
  with pytest.raises(checkpoints.ConfigMismatchError, match=_re(verdict)):
    checkpoints.guard_workdir(str(w), c)  # process 0's refusal is every process's
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(multihost.Agreement, "gather", lambda self, value: posted.append(value) or [value, ""])
  with pytest.raises(checkpoints.ConfigMismatchError, match="unreadable config.json"):
    checkpoints.guard_workdir(str(w), c)  # a half-written file is named, not a bare JSON error
  assert posted[-1].startswith(f"workdir {str(w)!r} holds an unreadable config.json")  # and told to the others
  (w / "config.json").unlink()
  checkpoints.guard_workdir(str(w), c)
  assert posted[-1] == "" and sorted(os.listdir(w)) == ["config.json"]  # written whole (via a renamed .tmp)
  with open(w / "config.json") as f:
    assert json.load(f) == stored_json(c)


def _re(text):
  import re

  return re.escape(text)


def tiny_sweep():
  from configs.sweeps import digits_full

  s = digits_full.get_config()
  s.only_losses = "CE"
  s.only_noise = "symmetric:0,symmetric:0.4"
  s.num_seeds = 1
  s.base_overrides = {"num_epochs": 1, "progress": False}
  return s


# The same bug, through the sweep's reuse check, in both directions.
@pytest.mark.parametrize("direction", ["stored has an extra key", "current has an extra key"])
def test_sweep_refuses_a_run_with_a_key_on_one_side_only(tmp_path, direction):
  s = tiny_sweep()
  runs = sweep.expand(s)
  assert [r["id"] for r in runs] == ["ce"]  # CE groups both noise settings in one run
  run = runs[0]
  stored = stored_json(run["config"], {"noise_settings": run["noises"]})
  path = tmp_path / "runs" / "ce"
  os.makedirs(path)
  with open(path / "config.json", "w") as f:
    json.dump(stored, f)
  sweep.check_changed(s, str(tmp_path))  # the run's own config: reused
  if direction == "stored has an extra key":
    stored["label_smoothing"], expected = 0.1, "label_smoothing: 0.1 -> None"
  else:
    del stored["weight_decay"]
    expected = f"weight_decay: None -> {run['config'].weight_decay!r}"
  with open(path / "config.json", "w") as f:
    json.dump(stored, f)
  with pytest.raises(checkpoints.ConfigMismatchError, match=r"ce: " + _re(expected)):
    sweep.check_changed(s, str(tmp_path))
  # With rerun_changed the old run is moved aside instead (renamed, never deleted).
  s.rerun_changed = True
  sweep.check_changed(s, str(tmp_path))
  assert not os.path.exists(path) and any(d.startswith("ce.old-") for d in os.listdir(tmp_path / "runs"))


# ------------------------------------------------------------------------- skipped steps in the averages
class NanOnMarker(nn.Module):
  """The model, with NaN logits for a marker image (the first pixel above `threshold`, after normalisation):
  a step whose batch holds a marker has a non-finite loss and is skipped; the others train normally."""

  inner: nn.Module
  threshold: float

  @nn.compact
  def __call__(self, x, train: bool):
    logits = self.inner(x, train=train)
    return jnp.where((x[:, 0, 0, 0] > self.threshold)[:, None], jnp.nan, logits)


def marker_npz(path):
  """96 training images (6 steps of 16) with pixels <= 200, 2 of them replaced by markers (all 255)."""
  r = np.random.default_rng(0)
  x_train = r.integers(0, 201, (96, 8, 8), dtype=np.uint8)
  x_train[[5, 50]] = 255
  np.savez(
    path,
    x_train=x_train,
    y_train=r.integers(0, 3, 96),
    x_test=r.integers(0, 201, (32, 8, 8), dtype=np.uint8),
    y_test=r.integers(0, 3, 32),
  )


AVERAGED = ("train_loss", "train_accuracy_noisy_labels", "clipped_fraction", "clipped_noisy_fraction", "noisy_fraction")


# Catches: epoch averages over all steps instead of the finite ones, in records.EpochMetrics.means:
#   `finite = np.asarray(self.finite, np.float64)` ->
#   `finite = np.asarray(self.finite, np.float64) + np.asarray(self.skipped)`
# (test_skip_nonfinite_skips_and_counts_bad_steps checks the counts and the parameters, not the averages).
@pytest.mark.slow  # trains end to end: compiling the step, evaluation and the replay
def test_epoch_averages_are_over_the_finite_steps_only(tmp_path, monkeypatch):
  marker_npz(tmp_path / "data.npz")
  c = tiny(
    num_epochs=1,
    num_devices=1,
    batch_size=16,
    eval_batch_size=16,
    train_eval_max_examples=0,
    skip_nonfinite=True,
    skip_nonfinite_max_share=1.0,  # 1-2 of its 6 steps are skipped on purpose
    model="mlp",
  )
  c.data.name, c.data.path, c.data.augment = "npz", str(tmp_path / "data.npz"), "none"
  # Clips in every batch (the quantile statistic) and flips 40% of the labels: no averaged metric is 0.
  c.loss.name, c.loss.statistic = "binary_cross_entropy_dynamic_clipping", "quantile"
  c.loss.warmup_epochs = 0  # from the first step
  programs = []

  def make_program(config, dataset, loss_fn):
    prog = make_program_of_train(config, dataset, loss_fn)
    # 228 lies between the ordinary pixels (<= 200) and the markers (255).
    threshold = (228 / 255 - prog.mean[0]) / prog.std[0]
    programs.append(dataclasses.replace(prog, model=NanOnMarker(prog.model, threshold)))
    return programs[-1]

  make_program_of_train = train.make_program
  monkeypatch.setattr(train, "make_program", make_program)
  assert train.train_and_evaluate(c, str(tmp_path / "run"))["status"] == "completed"
  written = records.read_history(str(tmp_path / "run"), timing=False)

  # The same steps, one compiled call each, from the same program, labels and feed as the trainer's.
  (prog,) = programs
  ds = data.load(c.data, seed=c.seed)
  noisy = run_settings.noisy_labels(c, ds, [(run_settings.noise_settings(c)[0], c.seed)])
  keys = rng.replica_keys([c.seed])
  labels = replicate(prog.mesh, np.stack([nl.labels for nl in noisy]))
  is_noisy = replicate(prog.mesh, np.stack([nl.is_noisy for nl in noisy]))
  state = train_lib.init_state(prog, keys, ds.image_shape)
  keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(keys)))
  feed = data.train_feed(ds, prog.mesh, keys, [c.seed], prog.batch_size, prog.steps_per_epoch, c.data)
  step_fn = train_lib.train_chunk_fn(prog)
  spe = prog.steps_per_epoch
  assert spe == 6
  for epoch in range(c.num_epochs):
    feed.start_epoch(epoch)
    steps = []
    for step in range(epoch * spe, (epoch + 1) * spe):
      state, m = step_fn(state, keys, labels, is_noisy, feed.next(1), jnp.arange(step, step + 1))
      steps.append({k: float(np.asarray(v)[0, 0]) for k, v in m.items()})
    finite = [s["finite"] for s in steps]
    assert spe - sum(finite) in (1, 2), finite  # both markers fall in the epoch: 1 or 2 of 6 steps skipped
    assert not any(np.isfinite(s["train_loss"]) for s, ok in zip(steps, finite) if not ok)
    record = written[epoch]
    assert record["skipped_steps"] == [spe - sum(finite)]
    expected = {k: np.mean([s[k] for s, ok in zip(steps, finite) if ok]) for k in AVERAGED}
    assert all(expected[k] > 0 for k in AVERAGED), expected
    expected["clipped_precision"] = expected["clipped_noisy_fraction"] / expected["clipped_fraction"]
    expected["clipped_recall"] = expected["clipped_noisy_fraction"] / expected["noisy_fraction"]
    for key, value in expected.items():
      # The trainer ran each epoch as one scanned call of 6 steps, the replay as 6 calls of one step:
      # the same float32 operations, which XLA may fuse differently (an ulp here and there, carried
      # through at most 6 steps of a 3-class MLP): far below the 1/6 or 2/6 that counting the
      # skipped steps changes a mean by.
      np.testing.assert_allclose(record[key][0], value, rtol=1e-5, err_msg=f"epoch {epoch + 1} {key}")


# ------------------------------------------------------------------------------ augmentation by position
# 8x8 digits with random crops (zero padding 1) and flips: data.augment='crop_flip'.
AUG_SEED = 0


def augmented_config(**overrides):
  c = tiny(batch_size=64, eval_batch_size=64, train_eval_max_examples=0, seed=AUG_SEED, **overrides)
  c.data.augment = "crop_flip"
  return c


def expected_augmented(ds, ids, step, spe):
  """The documented augmentation of global batch `step`, written out from jax.random: global row i is
  augmented with key fold_in(fold_in(fold_in(key(seed), 2 = the 'augment' stream), step), position),
  position = (step mod steps per epoch) * B + i, whatever device holds it."""

  @jax.jit  # one compiled program instead of many small eager ones
  def augment(step, raw):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(AUG_SEED), 2), step)
    positions = (step % spe) * len(ids) + jnp.arange(len(ids))
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
    return data.augment_batch(keys, raw, crop_pad=ds.crop_pad, flip=ds.flip)

  return np.asarray(augment(step, ds.train.source.images[ids]))


def augmented_batches_of_steps(monkeypatch, prog, ds, batch_of, steps):
  """{step: the augmented global batch the train step sees [B, H, W, C]}, each device's rows captured by a
  host callback around data.augment_batch and put in device order; `batch_of(step)` is the fed batch."""
  seen = []
  real = data.augment_batch

  def spy(keys, images, **kw):
    out = real(keys, images, **kw)
    jax.debug.callback(lambda d, x: seen.append((int(d), np.asarray(x))), jax.lax.axis_index(AXIS), out)
    return out

  monkeypatch.setattr(data, "augment_batch", spy)
  keys = rng.replica_keys([AUG_SEED])
  state = train_lib.init_state(prog, keys, ds.image_shape)
  keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(keys)))
  labels = replicate(prog.mesh, ds.train.labels[None])
  fn = train_lib.train_chunk_fn(prog)
  out = {}
  for step in steps:
    seen.clear()
    state, m = fn(state, keys, labels, jnp.zeros_like(labels, bool), batch_of(step), jnp.arange(step, step + 1))
    jax.block_until_ready(m)
    assert sorted(d for d, _ in seen) == list(range(prog.mesh.size))  # one block per device
    out[step] = np.concatenate([x for _, x in sorted(seen, key=lambda s: s[0])])
  monkeypatch.setattr(data, "augment_batch", real)
  return out


# Catches: augmentation keyed by the per-device position instead of the global one, in train_lib.train_step:
#   `start = (step % prog.steps_per_epoch) * prog.batch_size + jax.lax.axis_index(AXIS) * local_bs` ->
#   `start = (step % prog.steps_per_epoch) * prog.batch_size`
# (digits, the dataset of the other 1-vs-4-device tests, is not augmented by default).
@pytest.mark.slow  # compiles the train step three times
def test_augmented_global_batch_is_the_same_on_any_device_or_process_count(monkeypatch):
  c = augmented_config()
  ds = data.load(c.data)
  assert (ds.crop_pad, ds.flip) == (1, True)
  loss = run_settings.build_loss(c, ds.num_classes, run_settings.noise_settings(c))
  spe = len(ds.train) // c.batch_size
  steps = (0, spe + 3)  # the first step, and one mid-epoch in the second epoch
  order = feeds.host_epoch_order(AUG_SEED, len(ds.train))
  ids_of = lambda step: order(step // spe)[(step % spe) * c.batch_size : (step % spe + 1) * c.batch_size]
  expected = {s: expected_augmented(ds, ids_of(s), s, spe) for s in steps}
  for s in steps:  # crops and flips happened: most images moved
    assert (expected[s] != ds.train.source.images[ids_of(s)]).reshape(c.batch_size, -1).any(1).mean() > 0.5

  def memory_batches(num_devices):
    c.num_devices = num_devices
    prog = train.make_program(c, ds, loss)
    keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(rng.replica_keys([AUG_SEED]))))
    feed = data.train_feed(ds, prog.mesh, keys, [AUG_SEED], c.batch_size, spe, c.data)

    def batch_of(step):
      feed.start_epoch(step // spe, step % spe)
      return feed.next(1)

    return augmented_batches_of_steps(monkeypatch, prog, ds, batch_of, steps)

  def streamed_batches_from_two_processes():
    # 4 devices as 2 processes of 2: each process's rows of the global batch (mesh.process_rows would
    # give it [0, 32) or [32, 64)) from its own TrainStream, put together as the devices receive them.
    c.num_devices = 4
    prog = dataclasses.replace(train.make_program(c, ds, loss), per_replica_batches=False)
    source = sources.ArraySource(ds.train.source.images)
    halves = [feeds.TrainStream(source, order, c.batch_size, spe, rows) for rows in (slice(0, 32), slice(32, 64))]

    def batch_of(step):
      parts = [next(h.epoch(step // spe, step % spe)) for h in halves]
      ids = np.concatenate([p[0] for p in parts])[None]
      images = np.concatenate([p[1] for p in parts])[None]
      return {
        "images": to_devices(prog.mesh, images, c.batch_size, 1),
        "ids": to_devices(prog.mesh, ids, c.batch_size, 1),
      }

    return augmented_batches_of_steps(monkeypatch, prog, ds, batch_of, steps)

  for name, got in (
    ("1 device", memory_batches(1)),
    ("4 devices", memory_batches(4)),
    ("2 processes x 2 devices, streamed", streamed_batches_from_two_processes()),
  ):
    for s in steps:
      np.testing.assert_array_equal(got[s], expected[s], err_msg=f"{name}, step {s}")


# Tolerances of augmented training on 1 vs 4 devices. Splitting the global batch of 64 over 4 devices
# changes only the order of float32 sums: a step's loss moves by at most 64 * 2**-24 (~3.8e-6) relative
# (Higham's bound n u for n = 64 terms), and each step starts from parameters already moved by such
# roundings; counted linearly over the 19 steps of an epoch that is ~7e-5, so 1e-4 for the first epoch's
# loss and 2e-4 after two. An accuracy moves only when a prediction flips, which rounding of that size does
# for at most a couple of examples near a tie: 2 examples' worth. Keying augmentation by the per-device
# position changes what 3/4 of every batch look like: the first-epoch loss by about 1% and test accuracy by
# several points.
LOSS_RTOL = {1: 1e-4, 2: 2e-4}


# Catches the same per-device keying bug as above, in whole training runs.
@pytest.mark.slow  # trains two runs of 2 epochs
def test_augmented_training_on_one_device_equals_four(tmp_path):
  runs = {}
  for n in (1, 4):
    summary = train.train_and_evaluate(augmented_config(num_devices=n, num_epochs=2), str(tmp_path / str(n)))
    assert summary["status"] == "completed" and summary["num_devices"] == n
    runs[n] = records.read_history(str(tmp_path / str(n)), timing=False)
    num_noisy = round(summary["noise_rate_realised"] * 1257)  # digits: 1257 training images
  ds = data.load(augmented_config().data)
  assert (ds.crop_pad, ds.flip) == (1, True) and len(ds.train) == 1257
  for epoch, (one, four) in enumerate(zip(runs[1], runs[4]), 1):
    np.testing.assert_allclose(one["train_loss"], four["train_loss"], rtol=LOSS_RTOL[epoch], err_msg=f"epoch {epoch}")
  last_one, last_four = runs[1][-1], runs[4][-1]
  for key, count in (
    ("test_accuracy", len(ds.test)),
    ("train_accuracy_noisy_labels", len(ds.train) // 64 * 64),
    ("train_memorised_noisy_subset", num_noisy),
  ):
    np.testing.assert_allclose(last_one[key], last_four[key], rtol=0, atol=2 / count, err_msg=key)


# Catches: config.json without the loss's resolved hyperparameters (or a comparison that ignores them): a
# changed library default (e.g. a clipping loss's warm-up) would let a run made under the old default be
# resumed, or a sweep reuse its result, as if it were the current computation.
def test_a_run_made_under_other_library_defaults_is_another_config(tmp_path):
  c = tiny()
  c.loss.name = "clipped_cross_entropy"
  checkpoints.guard_workdir(str(tmp_path / "w"), c)
  path = tmp_path / "w" / "config.json"
  stored = json.loads(path.read_text())
  assert stored["loss_hparams"] == checkpoints.loss_hparams(c) and "num_std" in stored["loss_hparams"]
  assert checkpoints.config_differences(stored, c) == [] and runs.differences(stored, c) == []
  # The same config, recorded when the library's default separation was another one.
  stored["loss_hparams"]["num_std"] += 1.0
  path.write_text(json.dumps(stored))
  expected = (
    f"loss_hparams.num_std: {stored['loss_hparams']['num_std']!r} -> {rl.get(c.loss.name).hparams['num_std']!r}"
  )
  assert runs.differences(stored, c) == [expected]  # the sweep's test: its result is not reused
  with pytest.raises(checkpoints.ConfigMismatchError, match=_re(expected)):
    checkpoints.guard_workdir(str(tmp_path / "w"), c)
  # A run recorded before the resolved hyperparameters were: which defaults it ran with is unknown.
  del stored["loss_hparams"]
  path.write_text(json.dumps(stored))
  with pytest.raises(checkpoints.ConfigMismatchError, match="loss_hparams: not recorded"):
    checkpoints.guard_workdir(str(tmp_path / "w"), c)
