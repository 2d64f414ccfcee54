"""Streamed input (experiments/data/feeds.py): the same batches as in memory, per-process shards, exact resume.

The data is sklearn's digits, written once as an image folder of PNGs (train/<class>/*.png, test/...), so the
file reading, decoding and grain threads all run; runs are real CLI subprocesses where processes, kill -9
and Ctrl-C are involved.
"""

import json
import signal
import time

import jax
import numpy as np
import pytest
from cli_runs import cli, coordinator_env, finish, free_port, history, lines, wait
from PIL import Image

from configs import digits as digits_config
from experiments import data, rng, settings, train
from experiments.data import feeds, sources
from tests.data_configs import data_config


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
  """The digits split of the data layer as an image folder (8x8 grayscale PNGs)."""
  root = tmp_path_factory.mktemp("digits_folder")
  d = data.load(data_config("digits"))
  for split, x, y in (("train", d.train.source.images, d.train.labels), ("test", d.test.source.images, d.test.labels)):
    for i, (image, label) in enumerate(zip(x, y)):
      folder = root / split / str(label)
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image[..., 0]).save(folder / f"{i:04d}.png")
  return root


def folder_flags(root):
  return ("--config.data.name=image_folder", f"--config.data.path={root}", "--config.data.image_size=8")


def config_of(*flags):
  c = digits_config.get_config()
  c.steps_per_call = 8  # streaming needs >= 1 (0 would decode an epoch per call); memory runs don't care
  for flag in flags:
    key, value = flag[len("--config.") :].split("=", 1)
    group, _, key = key.rpartition(".")
    node = c[group] if group else c
    node[key] = type(node[key])(value) if not isinstance(node[key], bool) else value == "True"
  return c


# Two runs of 2 epochs whose arithmetic is the same up to how XLA fuses it (the streamed program takes the
# batch as an input, the in-memory one gathers it on device): float32 rounding can differ by an ulp per
# step, which 2 epochs grow to ~1e-5 relative at most in the loss; accuracy on 540 test images moves only
# if a prediction flips, which that cannot cause (margins are far above 1e-5).
RTOL = 1e-5


def assert_same_training(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x["train_loss"], y["train_loss"], rtol=RTOL)
    np.testing.assert_allclose(x["test_accuracy"], y["test_accuracy"], atol=1e-6)
    np.testing.assert_allclose(x["train_memorised_noisy_subset"], y["train_memorised_noisy_subset"], atol=1e-6)


@pytest.mark.parametrize(
  "loss",
  [
    {"name": "softmax_cross_entropy"},
    # Per-example state refreshed by an evaluation pass over the whole (streamed) training set.
    {"name": "truncated_generalized_cross_entropy", "prune_start_epoch": 1, "prune_every_epochs": 1},
    # Per-example state updated in the step, at the streamed batch's ids, gathered from every device.
    {"name": "early_learning_regularization"},
  ],
)
def test_streamed_digits_equal_in_memory_on_4_devices(tmp_path, loss):
  flags = ("--config.num_epochs=2", "--config.progress=False", "--config.batch_size=64")
  runs = {}
  for mode in ("memory", "stream"):
    config = config_of(*flags, f"--config.data.input={mode}")
    for key, value in loss.items():
      config.loss[key] = value
    summary = train.train_and_evaluate(config, str(tmp_path / mode))
    assert summary["status"] == "completed" and summary["num_devices"] == 4
    runs[mode] = history(tmp_path / mode)
  assert_same_training(runs["memory"], runs["stream"])
  for key in runs["memory"][-1]:
    if key.startswith("loss_state_mean/"):  # e.g. the share of truncated-Lq weights still 1
      np.testing.assert_allclose(runs["memory"][-1][key], runs["stream"][-1][key], rtol=RTOL)


def test_list_files_stream_what_the_folder_holds_in_memory(digits_folder, tmp_path):
  # The Clothing1M form of the same images: `path label` lines, paths relative to data_path.
  for split in ("train", "test"):
    lines = [
      f"{split}/{c.name}/{f.name} {c.name}"
      for c in sorted((digits_folder / split).iterdir())
      for f in sorted(c.iterdir())
    ]
    (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
  flags = (
    "--config.num_epochs=1",
    "--config.progress=False",
    "--config.batch_size=64",
    "--config.data.image_size=8",
    f"--config.data.path={digits_folder}",
  )
  folder = train.train_and_evaluate(
    config_of(*flags, "--config.data.name=image_folder", "--config.data.input=memory"), str(tmp_path / "folder")
  )
  listed = train.train_and_evaluate(
    config_of(
      *flags,
      "--config.data.name=image_list",
      "--config.data.input=stream",
      f"--config.data.train_list={tmp_path / 'train.txt'}",
      f"--config.data.test_list={tmp_path / 'test.txt'}",
    ),
    str(tmp_path / "list"),
  )
  assert folder["status"] == listed["status"] == "completed"
  assert_same_training(history(tmp_path / "folder"), history(tmp_path / "list"))


def test_auto_streams_past_the_memory_budget(digits_folder, capsys):
  config = config_of(*folder_flags(digits_folder), "--config.data.input=auto")
  assert data.input_mode(config.data) == "memory"  # 1257 RGB 8x8 images: 0.2 MB
  config.data.input_memory_gb = 1e-5  # 10 kB
  assert data.input_mode(config.data) == "stream"
  streamed = data.load(config.data)
  assert streamed.mode == "stream" and not isinstance(streamed.train.source, sources.ArraySource)
  assert "input: streaming image_folder" in capsys.readouterr().out
  in_memory = data.load(data_config("image_folder", path=str(digits_folder), image_size=8))
  np.testing.assert_array_equal(streamed.train.labels, in_memory.train.labels)
  # Up to stats_max_examples images the streamed normalisation is the in-memory one, from every image.
  np.testing.assert_allclose(streamed.mean, in_memory.mean, rtol=1e-12)
  np.testing.assert_allclose(streamed.std, in_memory.std, rtol=1e-12)
  first = sources.read(streamed.train.source, np.arange(5))
  np.testing.assert_array_equal(first, in_memory.train.source.images[:5])


def test_each_process_reads_its_rows_and_the_iterator_resumes(digits_folder):
  ds = data.load(data_config("image_folder", path=str(digits_folder), image_size=8, input="stream"))
  order = feeds.host_epoch_order(3, len(ds.train))
  spe, batch = 5, 8
  whole = feeds.TrainStream(ds.train.source, order, batch, spe, slice(0, batch), workers=2)
  halves = [
    feeds.TrainStream(ds.train.source, order, batch, spe, rows, workers=3) for rows in (slice(0, 4), slice(4, 8))
  ]
  perm = order(1)
  first, second = (list(h.epoch(1)) for h in halves)
  for t, (ids, images) in enumerate(whole.epoch(1)):
    np.testing.assert_array_equal(ids, perm[t * batch : (t + 1) * batch])  # the in-memory path's batch t
    np.testing.assert_array_equal(np.concatenate([first[t][0], second[t][0]]), ids)  # disjoint halves
    np.testing.assert_array_equal(np.concatenate([first[t][1], second[t][1]]), images)
  # The permutation the device computes for the in-memory path is the host's.
  device_perm = rng.epoch_permutation(jax.random.key(3), 1, len(ds.train))
  np.testing.assert_array_equal(np.asarray(device_perm), perm)
  # Started 2 batches into the epoch, the iterator continues exactly where a full pass would be.
  rest = list(whole.epoch(1, batches_done=2))
  np.testing.assert_array_equal(rest[0][0], perm[2 * batch : 3 * batch])
  assert len(rest) == spe - 2


def test_stream_reports_a_corrupt_image_or_skips_it(digits_folder, tmp_path):
  import shutil

  root = tmp_path / "copy"
  shutil.copytree(digits_folder, root)
  bad = sorted((root / "train" / "3").iterdir())[0]
  bad.write_bytes(bad.read_bytes()[:20])  # a truncated PNG
  config = config_of(
    *folder_flags(root), "--config.data.input=stream", "--config.num_epochs=1", "--config.progress=False"
  )
  with pytest.raises(Exception, match=str(bad.name)):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config.data.skip_corrupt = True
  assert len(data.load(config.data).train) == 1257 - 1
  summary = train.train_and_evaluate(config, str(tmp_path / "run_skip"))
  assert summary["status"] == "completed"


# ------------------------------------------------------------------------------------------ subprocesses
def test_two_streaming_processes_equal_one_in_memory_process(digits_folder, tmp_path):
  flags = (*folder_flags(digits_folder), "--config.num_epochs=2", "--config.batch_size=64", "--config.steps_per_call=8")
  single = cli(tmp_path / "memory", *flags, "--config.data.input=memory", devices=2)
  port = free_port()
  procs = [
    cli(tmp_path / "stream", *flags, "--config.data.input=stream", devices=1, extra_env=coordinator_env(port, i))
    for i in range(2)
  ]
  finish(*procs, single)
  with open(tmp_path / "stream" / "summary.json") as f:
    assert json.load(f)["num_devices"] == 2
  # Both meshes have 2 devices reducing the same 32 examples each; beyond the fusion difference of
  # RTOL's comment, only gloo's all-reduce of 2 partial sums differs, and a + b = b + a in float32.
  assert_same_training(history(tmp_path / "memory"), history(tmp_path / "stream"))


def test_streaming_resumes_exactly_after_ctrl_c_mid_epoch_and_kill_9(digits_folder, tmp_path):
  # 1257 // 64 = 19 steps an epoch in calls of 4: a Ctrl-C lands between calls, mid-epoch, and saves the
  # grain iterator's position; kill -9 loses everything since the last checkpoint (an epoch end).
  flags = (
    *folder_flags(digits_folder),
    "--config.data.input=stream",
    "--config.num_epochs=20",
    "--config.batch_size=64",
    "--config.steps_per_call=4",
    "--config.loop_free=False",
  )
  reference = cli(tmp_path / "ref", *flags)
  stopped = []
  # Interrupt after 2, 5, 8 finished epochs (and a little into the next) until one stop is mid-epoch.
  for epochs, delay in ((2, 0.013), (5, 0.029), (8, 0.041)):
    victim = cli(tmp_path / "run", *flags)
    deadline = time.time() + 240
    while lines(tmp_path / "run") < epochs and victim.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    time.sleep(delay)
    assert victim.poll() is None, "the run finished before it could be interrupted; make it longer"
    victim.send_signal(signal.SIGINT)
    out, _ = victim.communicate(timeout=60)
    assert victim.returncode == 130, out[-3000:]
    stopped.append(int(out.split("saved a checkpoint at step ")[1].split(";")[0]))
    if stopped[-1] % 19:
      break
  assert any(s % 19 for s in stopped), f"no interrupt landed mid-epoch: {stopped}"

  victim = cli(tmp_path / "run", *flags)
  deadline = time.time() + 240
  while lines(tmp_path / "run") < 11 and victim.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  time.sleep(0.05)
  assert victim.poll() is None, "the run finished before it could be killed; make it longer"
  victim.send_signal(signal.SIGKILL)
  victim.wait()

  out = finish(cli(tmp_path / "run", *flags))
  assert "Resuming from step" in out
  finish(reference)
  ref, run = history(tmp_path / "ref"), history(tmp_path / "run")
  assert [h["epoch"] for h in run] == list(range(1, 21))
  assert run == ref, f"stopped at step {stopped}"  # bit-identical metrics, every epoch


def test_tfds_streams_the_examples_it_loads_in_memory(tfds_mock, tmp_path):
  # tfds.testing.mock_data: random CIFAR-10-shaped examples, generated deterministically per index.
  with tfds_mock(num_examples=40):
    in_memory = data.load(data_config("cifar10", input="memory"))
    streamed = data.load(data_config("cifar10", input="stream", input_workers=2))
    np.testing.assert_array_equal(streamed.train.labels, in_memory.train.labels)
    np.testing.assert_array_equal(streamed.test.labels, in_memory.test.labels)
    np.testing.assert_array_equal(sources.read(streamed.train.source, np.arange(40)), in_memory.train.source.images)
    np.testing.assert_allclose(streamed.mean, in_memory.mean, rtol=1e-12)
    config = config_of(
      "--config.data.name=cifar10",
      "--config.data.input=stream",
      "--config.num_epochs=1",
      "--config.batch_size=8",
      "--config.model=mlp",
      "--config.progress=False",
      "--config.eval_batch_size=4",
    )
    config.noise.kind, config.noise.rate = "none", 0.0
    summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["status"] == "completed" and summary["epochs_completed"] == 1


def test_a_corrupt_image_read_by_one_process_stops_both_promptly(digits_folder, tmp_path):
  import shutil

  root = tmp_path / "copy"
  shutil.copytree(digits_folder, root)
  # A training image outside the (10-image) statistics sample, so it is first read by one process's rows
  # of some batch in epoch 1; without the agreement the other process would wait in the next collective.
  bad = sorted((root / "train" / "7").iterdir())[-1]
  bad.write_bytes(bad.read_bytes()[:30])
  flags = (
    *folder_flags(root),
    "--config.data.input=stream",
    "--config.num_epochs=1",
    "--config.batch_size=64",
    "--config.steps_per_call=2",
    "--config.data.stats_max_examples=10",
  )
  port = free_port()
  procs = [cli(tmp_path / "run", *flags, devices=1, extra_env=coordinator_env(port, i)) for i in range(2)]
  t0 = time.time()
  outs = wait(*procs, timeout=240)
  assert all(p.returncode != 0 for p in procs), [o[-2000:] for o in outs]
  for out in outs:  # every process names the file, whichever read it
    assert bad.name in out and "cannot" in out.lower(), out[-3000:]
  assert time.time() - t0 < 120, "a process waited for the one that failed"


def test_bad_streaming_settings_are_rejected_before_reading(digits_folder):
  config = config_of(*folder_flags(digits_folder), "--config.data.input=stream")
  config.steps_per_call = 0
  with pytest.raises(ValueError, match="steps_per_call=0"):
    settings.validate_static(config)
  for key, value in (("input", "disk"), ("input_workers", -1), ("input_prefetch", 0), ("input_memory_gb", 0.0)):
    bad = config_of(*folder_flags(digits_folder))
    bad.data[key] = value
    with pytest.raises(ValueError, match=key):
      settings.validate_static(bad)
