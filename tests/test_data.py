"""Tests for the data layer (experiments/data/). Offline: TFDS datasets are mocked or built locally."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from experiments import data, splits
from experiments.data import image_files, statistics, tfds_data
from tests.data_configs import data_config


def load(name="digits", **overrides):
  return data.load(data_config(name, **overrides))


def images(split):
  return split.source.images  # in memory: an ArraySource


# -------------------------------------------------------------------------------- digits
def test_digits_fixed_split():
  ds = load()
  assert images(ds.train).shape == (1257, 8, 8, 1) and images(ds.test).shape == (540, 8, 8, 1)
  assert images(ds.train).dtype == np.uint8 and ds.train.labels.dtype == np.int32
  assert ds.num_classes == 10 and set(np.unique(ds.train.labels)) == set(range(10))
  assert images(ds.train).min() == 0 and images(ds.train).max() == 255
  assert not ds.flip and ds.crop_pad == 0 and ds.mode == "memory"
  assert ds.real_noisy_labels is None and ds.val is None
  again = load()
  np.testing.assert_array_equal(images(ds.train), images(again.train))
  np.testing.assert_array_equal(ds.test.labels, again.test.labels)


def test_mean_std_match_numpy():
  ds = load()
  x = images(ds.train)
  np.testing.assert_allclose(ds.mean, (x / 255).mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(ds.std, (x / 255).std(axis=(0, 1, 2)), rtol=1e-6)
  x = np.random.default_rng(0).integers(0, 256, (3000, 9, 7, 3), dtype=np.uint8)  # > one chunk
  mean, std = statistics.channel_mean_std(x)
  np.testing.assert_allclose(mean, (x / 255).mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(std, (x / 255).std(axis=(0, 1, 2)), rtol=1e-6)


@pytest.mark.parametrize(
  "augment, expected", [("default", (0, False)), ("none", (0, False)), ("crop", (1, False)), ("crop_flip", (1, True))]
)
def test_augment_setting_overrides_the_dataset_default(augment, expected):
  ds = load(augment=augment)
  assert (ds.crop_pad, ds.flip) == expected


# -------------------------------------------------------------------------------- npz
def _arrays(n_train=12, n_test=6, shape=(5, 5), dtype=np.uint8):
  # Every class 0..4 occurs in y_train: inferring the class count requires it (test_input_data_checks.py).
  rng = np.random.default_rng(0)
  return dict(
    x_train=rng.integers(0, 256, (n_train, *shape)).astype(dtype),
    y_train=np.arange(n_train) % 5,
    x_test=rng.integers(0, 256, (n_test, *shape)).astype(dtype),
    y_test=np.arange(n_test) % 5,
  )


def _save(tmp_path, **arrays):
  path = str(tmp_path / "data.npz")
  np.savez(path, **arrays)
  return path


@pytest.mark.parametrize("shape", [(5, 5), (5, 5, 3)])
def test_npz_round_trip(tmp_path, shape):
  arrays = _arrays(shape=shape)
  ds = load("npz", path=_save(tmp_path, **arrays))
  channels = shape[2] if len(shape) == 3 else 1
  np.testing.assert_array_equal(images(ds.train), arrays["x_train"].reshape(12, 5, 5, channels))
  np.testing.assert_array_equal(ds.test.labels, arrays["y_test"])
  assert ds.train.labels.dtype == np.int32 and images(ds.test).dtype == np.uint8
  assert ds.num_classes == 5  # max label + 1 over train and test
  assert len(ds.mean) == channels


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_npz_float_images_become_uint8(tmp_path, scale):
  arrays = _arrays()
  expected = arrays["x_train"]
  arrays["x_train"] = expected / 255 * scale
  ds = load("npz", path=_save(tmp_path, **arrays))
  np.testing.assert_array_equal(images(ds.train)[..., 0], expected)


def _bad(tmp_path, **changes):
  arrays = {k: v for k, v in {**_arrays(), **changes}.items() if v is not None}
  return _save(tmp_path, **arrays)


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda p: str(p / "absent.npz"), "absent.npz.*no such file"),
    (lambda p: _bad(p, y_test=None), r"missing arrays \['y_test'\]"),
    (lambda p: _bad(p, y_train=-np.ones(12, np.int64)), "y_train has negative labels"),
    (lambda p: _bad(p, y_train=np.zeros(12, np.float32)), "y_train has dtype float32; labels must be integer"),
    (lambda p: _bad(p, y_test=np.zeros(4, np.int64)), "x_test has 6 images but y_test has 4 labels"),
    (lambda p: _bad(p, x_train=np.zeros((12, 5), np.uint8)), r"x_train has shape \(12, 5\)"),
    (lambda p: _bad(p, x_test=np.zeros((6, 4, 4), np.uint8)), "x_train images are .* but x_test"),
    (lambda p: _bad(p, x_train=np.full((12, 5, 5), 300.0)), r"x_train values span \[300.0, 300.0\]"),
  ],
)
def test_npz_errors(tmp_path, make, match):
  path = make(tmp_path)
  with pytest.raises(ValueError, match=match) as info:
    load("npz", path=path)
  assert path in str(info.value)


def test_npz_garbage_and_npy(tmp_path):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"this is not a zip archive" * 10)
  with pytest.raises(ValueError, match="garbage.npz: not a valid .npz file"):
    load("npz", path=str(garbage))
  npy = tmp_path / "single.npy"
  np.save(npy, np.zeros(3))
  with pytest.raises(ValueError, match="single.npy: holds a single array"):
    load("npz", path=str(npy))


# -------------------------------------------------------------------------------- validate
@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(name="imagenet"), "data.name='imagenet' is unknown; valid choices: .*'digits'"),
    (dict(name="npz"), "needs data.path"),
    (dict(name="cifar10_n", real_label_key="noise_label"), r"valid choices: \['aggre_label', 'worse_label'"),
    (dict(name="cifar10", real_label_key="aggre_label"), "has no human/web labels; datasets that do"),
    (dict(name="imagewang", tfds_config="80px"), r"valid choices: \['160px'"),
    (dict(name="mnist", tfds_config="x"), "valid choices: none"),
    (dict(name="controlled_noisy_web_labels", train_split="train_99"), "valid choices: .*'train_80'"),
    (dict(name="mnist", image_size=32), "has a fixed image size"),
    (dict(name="digits", val_size=100), r"data.val_size=100: the clean hold-out was replaced .*val_labels=clean"),
    (dict(name="digits", augment="rotate"), "data.augment='rotate' is unknown"),
    (dict(name="digits", input="disk"), "data.input='disk' is unknown"),
    (dict(name="digits", input_memory_gb=0.0), "data.input_memory_gb=0.0 is out of range"),
  ],
)
def test_validate_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.validate(data_config(**kwargs))


def test_validate_accepts_a_full_config():
  data.validate(data_config("cifar10_n", real_label_key="worse_label", tfds_dir="/x"))


# -------------------------------------------------------------------------------- validation hold-out
def test_hold_out():
  full = load()
  train, val = splits.validation_split(full.train.labels, 0.2, seed=1, num_classes=10)
  ds = data.hold_out(full, train, val)
  assert len(ds.train) == 1257 - 251 and images(ds.val).shape == (251, 8, 8, 1) and len(ds.val) == 251
  # Together the two parts are exactly the original training set, each example once, labels with their images.
  assert not set(train) & set(val) and sorted([*train, *val]) == list(range(1257))
  np.testing.assert_array_equal(images(ds.train), images(full.train)[train])
  np.testing.assert_array_equal(images(ds.val), images(full.train)[val])
  np.testing.assert_array_equal(ds.val.labels, full.train.labels[val])
  assert ds.mean == full.mean and ds.std == full.std  # statistics of the whole training set, with or without split
  with pytest.raises(ValueError, match="has its own validation split"):
    data.hold_out(ds, train[:10], train[10:20])


# -------------------------------------------------------------------------------- TFDS, mocked
@pytest.fixture
def mock_tfds(tfds_mock):
  """tfds.testing.mock_data with random examples and no data_dir (see conftest.tfds_mock)."""
  with tfds_mock(num_examples=24):
    yield


@pytest.mark.parametrize(
  "name, shape, flip, pad",
  [
    ("mnist", (28, 28, 1), False, 2),
    ("fashion_mnist", (28, 28, 1), True, 2),
    ("cifar10", (32, 32, 3), True, 4),
    ("svhn_cropped", (32, 32, 3), False, 4),
  ],
)
def test_tfds_mocked(mock_tfds, name, shape, flip, pad):
  ds = load(name)
  assert images(ds.train).shape == (24, *shape) and images(ds.test).shape == (24, *shape)
  assert images(ds.train).dtype == np.uint8 and ds.train.labels.dtype == np.int32
  assert ds.num_classes == 10 and ds.train.labels.max() < 10
  assert (ds.flip, ds.crop_pad) == (flip, pad)
  assert ds.real_noisy_labels is None
  train = tfds.data_source(name, split="train")
  np.testing.assert_array_equal(ds.train.labels, [train[i]["label"] for i in range(24)])
  np.testing.assert_array_equal(images(ds.train)[5], train[5]["image"])


@pytest.mark.parametrize(
  "name, key, num_classes",
  [
    ("cifar10_n", "", 10),
    ("cifar10_n", "worse_label", 10),
    ("cifar10_n", "random_label3", 10),
    ("cifar100_n", "", 100),
  ],
)
def test_cifar_n_mocked(mock_tfds, name, key, num_classes):
  whole = load(name, real_label_key=key)
  train_idx, val_idx = splits.validation_split(whole.train.labels, 4 / 24, seed=0, num_classes=num_classes)
  ds = data.hold_out(whole, train_idx, val_idx)  # the human labels follow their examples into the split
  key = key or {"cifar10_n": "aggre_label", "cifar100_n": "noise_label"}[name]
  train = [tfds.data_source(name, split="train")[i] for i in range(24)]
  assert ds.num_classes == num_classes
  np.testing.assert_array_equal(ds.train.labels, np.array([ex["label"] for ex in train])[train_idx])
  np.testing.assert_array_equal(ds.real_noisy_labels, np.array([ex[key] for ex in train])[train_idx])
  assert ds.real_noisy_labels.dtype == np.int32 and len(ds.real_noisy_labels) == 20


def test_imagewang_mocked_resizes(mock_tfds):
  # Mocked images have random sizes between 5 and 49 px.
  ds = load("imagewang", image_size=16)
  assert images(ds.train).shape == (24, 16, 16, 3) and images(ds.test).shape == (24, 16, 16, 3)
  assert ds.num_classes == 20 and ds.crop_pad == 2 and ds.flip


def test_controlled_noisy_web_labels_mocked(mock_tfds):
  ds = load("controlled_noisy_web_labels", tfds_config="mini_imagenet_blue", train_split="train_80")
  assert images(ds.train).shape == (24, 84, 84, 3) and ds.num_classes == 100
  # No clean label exists: the web label is both the training label and real_noisy_labels.
  np.testing.assert_array_equal(ds.real_noisy_labels, ds.train.labels)


def test_center_crop_resize():
  image = np.zeros((10, 30, 3), np.uint8)
  image[:, 10:20] = 200  # the centre square survives the crop, the black sides do not
  out = image_files.center_crop_resize(image, 5)
  assert out.shape == (5, 5, 3) and out.dtype == np.uint8
  assert out.min() > 150 and out.mean() > 190  # (bicubic taps reach a little past the crop box)
  assert image_files.center_crop_resize(np.zeros((7, 9, 1), np.uint8), 4).shape == (4, 4, 1)


# -------------------------------------------------------------------------------- TFDS, on disk
def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


class InputPipelineTestTiny(tfds.core.GeneratorBasedBuilder):
  """A real ArrayRecord dataset built offline. Images are passed PNG-encoded: encoding arrays needs TF."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(4, 4, 3)),
          "label": tfds.features.ClassLabel(num_classes=3),
          "noisy": tfds.features.ClassLabel(num_classes=3),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(30)}

  def _generate_examples(self, n):
    for i in range(n):  # every pixel equals i, so each record can be told apart after shuffling
      yield i, {"image": _png(np.full((4, 4, 3), i, np.uint8)), "label": i % 3, "noisy": (i + 1) % 3}


def test_tfds_reads_array_record(tmp_path):
  builder = InputPipelineTestTiny(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare()
  (source, y, noisy), num_classes = tfds_data.open_split(
    builder.name, "train", str(tmp_path), image_size=None, noisy_key="noisy"
  )
  x = source.read_many(np.arange(len(source)))
  ids = x[:, 0, 0, 0].astype(np.int32)
  assert x.shape == (30, 4, 4, 3) and num_classes == 3 and sorted(ids) == list(range(30))
  np.testing.assert_array_equal(y, ids % 3)
  np.testing.assert_array_equal(noisy, (ids + 1) % 3)
  np.testing.assert_array_equal(source[7], x[7])  # one record = the same record in a block read


@pytest.mark.parametrize(
  "name, kwargs, command",
  [
    ("mnist", {}, "tfds build mnist --file_format=array_record --data_dir="),
    ("cifar10_n", {}, "tfds build cifar10_n --file_format=array_record --data_dir="),
    (
      "controlled_noisy_web_labels",
      {},
      "tfds build controlled_noisy_web_labels/mini_imagenet_red --file_format=array_record",
    ),
    ("imagewang", dict(tfds_config="320px"), "tfds build imagewang/320px --file_format=array_record"),
  ],
)
def test_not_prepared(tmp_path, name, kwargs, command):
  with pytest.raises(tfds_data.DatasetNotPreparedError) as info:
    load(name, tfds_dir=str(tmp_path), input="memory", **kwargs)
  message = str(info.value)
  assert command in message and "TensorFlow" in message
  assert ("--manual_dir" in message) == (name in ("cifar10_n", "controlled_noisy_web_labels"))
  assert not any(tmp_path.iterdir())  # nothing was downloaded or created


# -------------------------------------------------------------------------------- augment
def _batch(dtype=np.uint8, n=8, size=8, channels=3):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, size, size, channels)).astype(dtype))


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augment_shape_dtype(dtype):
  batch = _batch(dtype)
  out = data.augment_batch(_keys(8), batch, crop_pad=2, flip=True)
  assert out.shape == batch.shape and out.dtype == batch.dtype


def test_augment_identity():
  batch = _batch()
  np.testing.assert_array_equal(data.augment_batch(_keys(8), batch, crop_pad=0, flip=False), batch)


def test_flip_mirrors_or_keeps_each_image():
  batch = _batch(n=32)
  out = np.asarray(data.augment_batch(_keys(32), batch, crop_pad=0, flip=True))
  flipped = [np.array_equal(o, b[:, ::-1]) for o, b in zip(out, np.asarray(batch))]
  kept = [np.array_equal(o, b) for o, b in zip(out, np.asarray(batch))]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_is_a_window_of_the_padded_image_per_example():
  image = _batch(n=1, size=6)[0]
  out = np.asarray(data.augment_batch(_keys(16, 1), jnp.stack([image] * 16), crop_pad=2, flip=False))
  padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
  windows = {(dy, dx): padded[dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)}
  offsets = [next(o for o, w in windows.items() if np.array_equal(w, crop)) for crop in out]
  assert len(set(offsets)) > 4  # identical inputs, independent offsets


def test_augment_jit_matches_eager():
  batch = _batch()
  fn = lambda k, x: data.augment_batch(k, x, crop_pad=3, flip=True)
  np.testing.assert_array_equal(jax.jit(fn)(_keys(8, 2), batch), fn(_keys(8, 2), batch))


def test_normalize():
  batch = _batch()
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
  expected = (np.asarray(batch) / 255 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(
    jax.jit(data.normalize, static_argnums=(1, 2))(batch, mean, std), expected, rtol=1e-5, atol=1e-5
  )
  assert data.normalize(batch, mean, std, dtype=jnp.bfloat16).dtype == jnp.bfloat16
