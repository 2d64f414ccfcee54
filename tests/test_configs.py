"""Every shipped config builds, validates and reaches its compiled step with its own model and input shape.

Configs are discovered from the files in configs/ and configs/sweeps/, so a new config is covered
without editing this file. Every config (and every sweep's first cell) loads its data, draws its noise,
builds its loss, optimizer and program, and traces and lowers its train step; the first config of each
model also trains one epoch (see TRAINED). Training is kept cheap: one epoch of two global batches of 8
examples (TFDS datasets are mocked with `tfds.testing.mock_data`, which needs neither data on disk nor
TensorFlow), a tiny evaluation, no progress bar; the MLP/small-CNN configs train on the 4 simulated CPU
devices of conftest, the ResNets on one (see ONE_DEVICE_MODELS). The config's dataset, input shape, model,
loss, optimizer, schedule type, noise kind and compute dtype are kept; only sizes and lengths are shrunk (see
`small_overrides`). Nearly all the time of a trained config is XLA:CPU compiling its init, train step and
eval; lowering (tracing to StableHLO, no XLA compilation) catches what a config can get wrong (shapes,
classes, dtypes, loss and optimizer settings), while what XLA compiles depends on the model alone.
"""

import contextlib
import importlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import data, models, records, rng, settings, sweep, train, train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Examples per split of the mocked TFDS datasets: 2 global batches of 8 (1 when val_fraction holds some out).
MOCK_EXAMPLES = 16


def _modules(folder, package):
  names = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, folder)) if f.endswith(".py") and not f.startswith("_"))
  return [f"{package}.{n}" for n in names]


TRAIN_CONFIGS = _modules("configs", "configs")
SWEEP_CONFIGS = _modules(os.path.join("configs", "sweeps"), "configs.sweeps")


def get_config(module):
  return importlib.import_module(module).get_config()


# Models whose data-parallel train step is slow to compile on XLA:CPU. With the mesh of all 4 simulated
# devices, ResNet-34's step took 16 s to compile, on a one-device mesh 9 s (cold, 2 cores, -n 2: this file
# took 3 min 25 s with 4 devices, 2 min 26 s with one). These configs train on one device: the program is
# the same shard_map with the same collectives (pmean of gradients and BatchNorm statistics over 'batch'),
# traced and compiled for a mesh of one. That N devices compute what one does is tested in test_train.py.
ONE_DEVICE_MODELS = tuple(n for n in models.names() if n not in ("mlp", "small_cnn"))


def small_overrides(config) -> dict:
  """Keys that make `config` one cheap epoch; everything that defines *what* is trained stays."""
  ndev = jax.device_count()
  out = {
    "num_epochs": 1,
    "batch_size": 2 * ndev,  # 8: two global batches of the mocked data
    "eval_batch_size": 4,  # per device
    "train_eval_max_examples": 16,
    "progress": False,
    "checkpoint_every_epochs": 1,
    "keep_checkpoints": 1,
    "num_devices": 1 if config.model in ONE_DEVICE_MODELS else 0,
  }
  if config.schedule == "step":
    # Boundaries must lie inside (0, num_epochs); one mid-epoch boundary keeps the step schedule.
    out["lr_boundaries"] = (0.5,)
  return out


# Loss hyperparameters that count epochs from the start of training and must act within the run
# (robust_losses checks them against num_epochs): truncated Lq's first pruning pass, the clipping losses'
# unclipped warm-up. In a one-epoch run they start at epoch 0, so the schedule still runs.
LOSS_EPOCH_HPARAMS = ("prune_start_epoch", "warmup_epochs")


def small_loss_hparams(hparams) -> dict:
  return {k: (0 if k in LOSS_EPOCH_HPARAMS and v else v) for k, v in hparams.items()}


def shrink(config):
  for key, value in small_overrides(config).items():
    if key == "data":
      config.data.update(value)
    else:
      config[key] = value
  for key, value in small_loss_hparams(config.loss).items():
    config.loss[key] = value
  return config


def lower_train_step(config, noises=None):
  """What `train.train_and_evaluate` builds before it compiles (data, noise, validation split, loss,
  program, initial state's shapes), then the train step traced and lowered to StableHLO: everything but
  XLA's compilation. Returns the lowered step's text."""
  noises = settings.noise_settings(config, noises)
  settings.validate_static(config, noises)
  dataset = data.load(config.data, seed=config.seed)
  settings.validate_with_data(config, dataset, noises)
  run = train.build(config, dataset, noises)
  prog = run.prog
  keys = rng.replica_keys([s for _, s in run.replicas])
  state = jax.eval_shape(lambda k: train_lib.init_state(prog, k, run.dataset.image_shape), keys)
  lead = (len(run.replicas), 1) if prog.per_replica_batches else (1,)
  batch = {
    "images": jax.ShapeDtypeStruct((*lead, config.batch_size, *run.dataset.image_shape), jnp.uint8),
    "ids": jax.ShapeDtypeStruct((*lead, config.batch_size), jnp.int32),
  }
  labels = np.stack([n.labels for n in run.noisy])
  is_noisy = np.stack([n.is_noisy for n in run.noisy])
  step = train_lib.train_chunk_fn(prog).trace(state, keys, labels, is_noisy, batch, jnp.arange(1)).lower()
  return step.as_text()


def uses_tfds(config) -> bool:
  return data.SPECS[config.data.name].kind == "tfds"


# Image-file configs (ANIMAL-10N, WebVision, Clothing1M) train on generated PNGs of this side: the
# smallest the ImageNet-stem ResNets take (their total stride), so that compiling ResNet-50 stays cheap.
FILE_IMAGE_SIZE = 32


def mock_image_files(config, root):
  """Writes MOCK_EXAMPLES random PNGs per split and `path label` lists for an image-file config, and
  points the config at them (labels cycle through the config's classes)."""
  from PIL import Image

  rng = np.random.default_rng(0)
  num_classes = config.data.num_classes or 3
  for split in ("train", "test"):
    lines = []
    for i in range(MOCK_EXAMPLES):
      label = i % num_classes
      folder = root / split / f"class{label:03d}"
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
      lines.append(f"{split}/class{label:03d}/{i}.png {label}")
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
  config.data.path = str(root)
  config.data.image_size = FILE_IMAGE_SIZE
  if config.data.name == "image_list":
    config.data.train_list, config.data.test_list = str(root / "train.txt"), str(root / "test.txt")
  elif config.data.num_classes:  # image_folder: every class has a folder only when MOCK_EXAMPLES >= classes
    config.data.num_classes = min(num_classes, MOCK_EXAMPLES)
  return config


def assert_one_good_epoch(summary, workdir, model):
  assert summary["status"] == "completed" and summary["epochs_completed"] == 1
  assert summary["config"]["model"] == model  # the config's own model was trained
  (record,) = records.read_history(str(workdir))
  assert record["epoch"] == 1 and record["step"] >= 1
  assert all(s == 0 for s in record["skipped_steps"])
  for key in ("train_loss", "test_accuracy"):
    assert all(v is not None and math.isfinite(v) for v in record[key]), (key, record[key])
  assert all(0 <= a <= 1 for a in record["test_accuracy"])


def test_all_configs_are_discovered():
  # README lists these; a file that stops defining get_config() would fail the tests below.
  for name in (
    "default",
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "cifar10n",
    "cifar100n",
    "imagewoof",
    "tce_paper",
    "gce_paper",
  ):
    assert f"configs.{name}" in TRAIN_CONFIGS, name
  for name in ("digits", "clipping_ablation", "tce_table1", "tce_table2", "gce_cifar", "bce_clipping", "cifar_n"):
    assert f"configs.sweeps.{name}" in SWEEP_CONFIGS, name


@pytest.mark.parametrize("module", TRAIN_CONFIGS)
def test_training_config_builds_and_validates(module, tmp_path):
  config = get_config(module)
  if data.SPECS[config.data.name].kind == "files":
    # Without files these must fail before anything is read, naming what is missing.
    with pytest.raises(ValueError, match="data.path"):
      settings.validate_static(config)
    mock_image_files(config, tmp_path)
  settings.validate_static(config)
  assert config.data.name in data.DATASETS
  # Locked like the CLI's: a misspelt key is an error.
  config.lock()
  with pytest.raises(AttributeError):
    config.num_epoch = 3


# The first training config of each model (sorted by file name) trains one epoch; the others, and the sweeps'
# first cells, are lowered (see the module docstring).
TRAINED = tuple({get_config(m).model: m for m in reversed(TRAIN_CONFIGS)}.values())


TRAINED_MODELS = {get_config(m).model for m in TRAINED}


@pytest.mark.parametrize("module", TRAIN_CONFIGS)
def test_training_config_lowers_or_trains_one_epoch(module, tmp_path, tfds_mock):
  config = shrink(get_config(module))
  model = config.model
  if data.SPECS[config.data.name].kind == "files":
    mock_image_files(config, tmp_path / "data")
    config.data.input = "stream"  # their real sizes stream (input='auto'); at mock size they would not
  settings.validate_static(config)
  with tfds_mock(num_examples=MOCK_EXAMPLES) if uses_tfds(config) else contextlib.nullcontext():
    if module not in TRAINED:
      assert "stablehlo" in lower_train_step(config)
      return
    summary = train.train_and_evaluate(config, str(tmp_path))
  assert_one_good_epoch(summary, str(tmp_path), model)


@pytest.mark.parametrize("module", SWEEP_CONFIGS)
def test_sweep_config_expands_and_validates(module):
  runs = sweep.expand(get_config(module))  # validates every cell's config
  assert runs and len({r["id"] for r in runs}) == len(runs)


# The other protocols of the sweeps that take one (`--config=FILE:protocol`); their cells share the default
# protocol's code path, so expanding (which validates every cell) is their check.
PROTOCOLS = [
  ("configs.sweeps.clipping_ce", "confirm"),
  ("configs.sweeps.clipping_issue20", "confirm"),
  ("configs.sweeps.clipping_issue20", "confirm_cnn"),
]


@pytest.mark.parametrize("module,protocol", PROTOCOLS)
def test_sweep_protocol_expands_and_validates(module, protocol):
  s = importlib.import_module(module).get_config(protocol)
  runs = sweep.expand(s)
  assert runs and len({r["id"] for r in runs}) == len(runs)
  assert s.base.optimizer == "adam" and s.base.model == ("small_cnn" if protocol == "confirm_cnn" else "mlp")
  with pytest.raises(ValueError, match="valid choices"):
    importlib.import_module(module).get_config("nope")


@pytest.mark.parametrize("module", SWEEP_CONFIGS)
def test_sweep_config_first_cell_lowers_or_trains(module, tmp_path, tfds_mock):
  s = get_config(module)
  first_row = dict(s.losses[0])
  first_row["hparams"] = small_loss_hparams(first_row.get("hparams", {}))
  s.losses = [first_row]
  s.only_losses = ""
  # The first cell: the first loss at the first noise setting. (With group_noise a run trains all noise
  # settings as vmapped replicas; apl_benchmark_c100's 8 ResNet-34 replicas took 130 s.)
  s.only_noise = sweep.noise_label(s.noise[0])
  # One seed: seeds are vmapped replicas, and a vmapped convolution over R parameter sets costs about R
  # times as much to compile and run on CPU (gce_cifar's 3 seeds: 160 s instead of 50 s). test_train
  # checks that vmapped seeds equal separate runs.
  s.num_seeds = 1
  # The sweep's own smoke-test hook: overrides applied to every cell after the loss row's overrides.
  s.base_overrides = small_overrides(s.base)
  (first,) = sweep.expand(s)
  config = first["config"]
  with tfds_mock(num_examples=MOCK_EXAMPLES) if uses_tfds(config) else contextlib.nullcontext():
    if config.model in TRAINED_MODELS:  # its compiled step is covered by the training config of that model
      assert "stablehlo" in lower_train_step(config, first["noises"])
      return
    summary = train.train_and_evaluate(config, str(tmp_path), first["noises"])
  assert_one_good_epoch(summary, str(tmp_path), s.base.model)
  assert len(summary["replicas"]) == s.num_seeds * len(first["noises"])
