"""Tests for experiments/input_pipeline.py. Offline: TFDS datasets are mocked or built locally."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from experiments import input_pipeline as ip


# -------------------------------------------------------------------------------- digits
def test_digits_fixed_split():
  ds = ip.load("digits")
  assert ds.x_train.shape == (1257, 8, 8, 1) and ds.x_test.shape == (540, 8, 8, 1)
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10 and set(np.unique(ds.y_train)) == set(range(10))
  assert ds.x_train.min() == 0 and ds.x_train.max() == 255
  assert not ds.augment_flip and ds.augment_crop_pad == 0
  np.testing.assert_array_equal(ds.train_ids, np.arange(1257))
  assert ds.real_noisy_labels is None and ds.x_val is None
  again = ip.load("digits")
  np.testing.assert_array_equal(ds.x_train, again.x_train)
  np.testing.assert_array_equal(ds.y_test, again.y_test)


def test_mean_std_match_numpy():
  ds = ip.load("digits")
  np.testing.assert_allclose(ds.mean, (ds.x_train / 255).mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(ds.std, (ds.x_train / 255).std(axis=(0, 1, 2)), rtol=1e-6)
  x = np.random.default_rng(0).integers(0, 256, (3000, 9, 7, 3), dtype=np.uint8)  # > one chunk
  mean, std = ip.channel_mean_std(x)
  np.testing.assert_allclose(mean, (x / 255).mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(std, (x / 255).std(axis=(0, 1, 2)), rtol=1e-6)


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
  ds = ip.load("npz", data_path=_save(tmp_path, **arrays))
  channels = shape[2] if len(shape) == 3 else 1
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"].reshape(12, 5, 5, channels))
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
  assert ds.y_train.dtype == np.int32 and ds.x_test.dtype == np.uint8
  assert ds.num_classes == 5  # max label + 1 over train and test
  assert len(ds.mean) == channels


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_npz_float_images_become_uint8(tmp_path, scale):
  arrays = _arrays()
  expected = arrays["x_train"]
  arrays["x_train"] = expected / 255 * scale
  ds = ip.load("npz", data_path=_save(tmp_path, **arrays))
  np.testing.assert_array_equal(ds.x_train[..., 0], expected)


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
    ip.load("npz", data_path=path)
  assert path in str(info.value)


def test_npz_garbage_and_npy(tmp_path):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"this is not a zip archive" * 10)
  with pytest.raises(ValueError, match="garbage.npz: not a valid .npz file"):
    ip.load("npz", data_path=str(garbage))
  npy = tmp_path / "single.npy"
  np.save(npy, np.zeros(3))
  with pytest.raises(ValueError, match="single.npy: holds a single array"):
    ip.load("npz", data_path=str(npy))


# -------------------------------------------------------------------------------- validate
@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(name="imagenet"), "dataset='imagenet' is unknown; valid choices: .*'digits'"),
    (dict(name="npz"), "needs data_path"),
    (dict(name="cifar10_n", real_label_key="noise_label"), r"valid choices: \['aggre_label', 'worse_label'"),
    (dict(name="cifar10", real_label_key="aggre_label"), "has no human/web labels; datasets that do"),
    (dict(name="imagewang", tfds_config="80px"), r"valid choices: \['160px'"),
    (dict(name="mnist", tfds_config="x"), "valid choices: none"),
    (dict(name="controlled_noisy_web_labels", train_split="train_99"), "valid choices: .*'train_80'"),
    (dict(name="mnist", image_size=32), "has a fixed image size"),
    (dict(name="digits", val_size=-1), "val_size=-1 is out of range"),
  ],
)
def test_validate_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ip.validate(**kwargs)


def test_validate_accepts_load_kwargs():
  ip.validate("cifar10_n", real_label_key="worse_label", data_dir="/x", val_size=10, val_seed=3)


# -------------------------------------------------------------------------------- validation hold-out
def test_hold_out():
  full = ip.load("digits")
  ds = ip.load("digits", val_size=200, val_seed=1)
  assert len(ds.y_train) == 1057 and ds.x_val.shape == (200, 8, 8, 1) and len(ds.y_val) == 200
  np.testing.assert_array_equal(ds.train_ids, np.arange(1057))
  np.testing.assert_array_equal(ds.x_val, ip.load("digits", val_size=200, val_seed=1).x_val)
  assert not np.array_equal(ds.y_val, ip.load("digits", val_size=200, val_seed=2).y_val)
  # Together the two parts are exactly the original training set, each example once.
  train, val = ip._hold_out(1257, 200, seed=1)
  assert not set(train) & set(val) and sorted([*train, *val]) == list(range(1257))
  np.testing.assert_array_equal(ds.x_train, full.x_train[train])
  np.testing.assert_array_equal(ds.y_val, full.y_train[val])
  with pytest.raises(ValueError, match="val_size=1257 must be smaller than the training set"):
    ip.load("digits", val_size=1257)


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
  ds = ip.load(name)
  assert ds.x_train.shape == (24, *shape) and ds.x_test.shape == (24, *shape)
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10 and ds.y_train.max() < 10
  assert (ds.augment_flip, ds.augment_crop_pad) == (flip, pad)
  assert ds.real_noisy_labels is None
  train = tfds.data_source(name, split="train")
  np.testing.assert_array_equal(ds.y_train, [train[i]["label"] for i in range(24)])
  np.testing.assert_array_equal(ds.x_train[5], train[5]["image"])


@pytest.mark.parametrize(
  "name, key, num_classes",
  [
    ("cifar10_n", None, 10),
    ("cifar10_n", "worse_label", 10),
    ("cifar10_n", "random_label3", 10),
    ("cifar100_n", None, 100),
  ],
)
def test_cifar_n_mocked(mock_tfds, name, key, num_classes):
  ds = ip.load(name, real_label_key=key, val_size=4)
  key = key or {"cifar10_n": "aggre_label", "cifar100_n": "noise_label"}[name]
  train_idx, _ = ip._hold_out(24, 4, seed=0)
  train = [tfds.data_source(name, split="train")[i] for i in range(24)]
  assert ds.num_classes == num_classes
  np.testing.assert_array_equal(ds.y_train, np.array([ex["label"] for ex in train])[train_idx])
  np.testing.assert_array_equal(ds.real_noisy_labels, np.array([ex[key] for ex in train])[train_idx])
  assert ds.real_noisy_labels.dtype == np.int32 and len(ds.real_noisy_labels) == 20


def test_imagewang_mocked_resizes(mock_tfds):
  # Mocked images have random sizes between 5 and 49 px.
  ds = ip.load("imagewang", image_size=16)
  assert ds.x_train.shape == (24, 16, 16, 3) and ds.x_test.shape == (24, 16, 16, 3)
  assert ds.num_classes == 20 and ds.augment_crop_pad == 2 and ds.augment_flip


def test_controlled_noisy_web_labels_mocked(mock_tfds):
  ds = ip.load("controlled_noisy_web_labels", tfds_config="mini_imagenet_blue", train_split="train_80")
  assert ds.x_train.shape == (24, 84, 84, 3) and ds.num_classes == 100
  # No clean label exists: the web label is both y_train and real_noisy_labels.
  np.testing.assert_array_equal(ds.real_noisy_labels, ds.y_train)


def testcenter_crop_resize():
  image = np.zeros((10, 30, 3), np.uint8)
  image[:, 10:20] = 200  # the centre square survives the crop, the black sides do not
  out = ip.center_crop_resize(image, 5)
  assert out.shape == (5, 5, 3) and out.dtype == np.uint8
  assert out.min() > 150 and out.mean() > 190  # (bicubic taps reach a little past the crop box)
  assert ip.center_crop_resize(np.zeros((7, 9, 1), np.uint8), 4).shape == (4, 4, 1)


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
  (x, y, noisy), num_classes = ip._load_tfds(builder.name, "train", str(tmp_path), image_size=None, noisy_key="noisy")
  ids = x[:, 0, 0, 0].astype(np.int32)
  assert x.shape == (30, 4, 4, 3) and num_classes == 3 and sorted(ids) == list(range(30))
  np.testing.assert_array_equal(y, ids % 3)
  np.testing.assert_array_equal(noisy, (ids + 1) % 3)


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
  with pytest.raises(ip.DatasetNotPreparedError) as info:
    ip.load(name, data_dir=str(tmp_path), **kwargs)
  message = str(info.value)
  assert command in message and "TensorFlow" in message
  assert ("--manual_dir" in message) == (name in ("cifar10_n", "controlled_noisy_web_labels"))
  assert not any(tmp_path.iterdir())  # nothing was downloaded or created


# -------------------------------------------------------------------------------- augment
def _batch(dtype=np.uint8, n=8, size=8, channels=3):
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, size, size, channels)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augment_shape_dtype(dtype):
  images = _batch(dtype)
  out = ip.augment(jax.random.key(0), images, crop_pad=2, flip=True)
  assert out.shape == images.shape and out.dtype == images.dtype


def test_augment_identity():
  images = _batch()
  out = ip.augment(jax.random.key(0), images, crop_pad=0, flip=False)
  np.testing.assert_array_equal(out, images)


def test_flip_mirrors_exactly():
  images = _batch()
  np.testing.assert_array_equal(ip.random_flip(jax.random.key(0), images, prob=1.0), images[:, :, ::-1])
  np.testing.assert_array_equal(ip.random_flip(jax.random.key(0), images, prob=0.0), images)


def test_crop_is_a_window_of_the_padded_image_per_example():
  image = _batch(n=1, size=6)[0]
  out = np.asarray(ip.random_crop(jax.random.key(1), jnp.stack([image] * 16), pad=2))
  padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
  windows = {(dy, dx): padded[dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)}
  offsets = [next(o for o, w in windows.items() if np.array_equal(w, crop)) for crop in out]
  assert len(set(offsets)) > 4  # identical inputs, independent offsets


def test_augment_jit_matches_eager():
  images = _batch()
  fn = functools.partial(ip.augment, crop_pad=3, flip=True)
  np.testing.assert_array_equal(jax.jit(fn)(jax.random.key(2), images), fn(jax.random.key(2), images))


def test_normalize():
  images = _batch()
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
  expected = (np.asarray(images) / 255 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(
    jax.jit(ip.normalize, static_argnums=(1, 2))(images, mean, std), expected, rtol=1e-5, atol=1e-5
  )
  assert ip.normalize(images, mean, std, dtype=jnp.bfloat16).dtype == jnp.bfloat16
