"""Bad-data checks of the data layer (experiments/data/), each on a real bad .npz written to tmp_path.

Non-finite pixels, constant channels (std 0) and label sets whose class count cannot be inferred safely.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import data
from experiments.data import statistics, tfds_data
from experiments.data.specs import DATASETS, SPECS
from tests.data_configs import data_config


def load(name, **overrides):
  return data.load(data_config(name, **overrides))


def _save(tmp_path, name="data.npz", **arrays):
  path = str(tmp_path / name)
  np.savez(path, **arrays)
  return path


def _arrays(n_train=20, n_test=10, shape=(6, 6, 3), classes=5, dtype=np.uint8):
  """Random images; labels cycle through 0..classes-1, so every class trains."""
  rng = np.random.default_rng(0)
  return dict(
    x_train=rng.integers(0, 256, (n_train, *shape)).astype(dtype),
    y_train=np.arange(n_train) % classes,
    x_test=rng.integers(0, 256, (n_test, *shape)).astype(dtype),
    y_test=np.arange(n_test) % classes,
  )


# -------------------------------------------------------------------------------- non-finite pixels
@pytest.mark.parametrize("value, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
@pytest.mark.parametrize("scale", [1.0, 255.0])  # [0, 1] and [0, 255] float images
def test_non_finite_pixel_names_file_array_and_position(tmp_path, value, shown, scale):
  arrays = _arrays()
  x = arrays["x_train"] / 255 * scale
  x[3, 4, 5, 0] = value
  x[7, 0, 0, 2] = value  # a later one: the first is reported, the count covers both
  path = _save(tmp_path, **{**arrays, "x_train": x})
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # was: RuntimeWarning from the uint8 cast, and nothing else
    with pytest.raises(ValueError, match=rf"x_train\[3, 4, 5, 0\] = {shown}; images must be finite") as info:
      load("npz", path=path)
  assert path in str(info.value) and "(non-finite values in x_train: 2)" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_in_x_test_grayscale(tmp_path, dtype):
  # [N, H, W] as in mnist.npz: the position is given in the file's own shape.
  arrays = _arrays(shape=(6, 6), dtype=dtype)
  arrays["x_test"][9, 2, 1] = np.nan
  path = _save(tmp_path, **arrays)
  with pytest.raises(ValueError, match=r"x_test\[9, 2, 1\] = nan; images must be finite") as info:
    load("npz", path=path)
  assert path in str(info.value)


def test_finite_float_images_still_load(tmp_path):
  arrays = _arrays()
  expected = arrays["x_train"]
  path = _save(tmp_path, **{**arrays, "x_train": expected.astype(np.float32)})
  np.testing.assert_array_equal(load("npz", path=path).train.source.images, expected)


# -------------------------------------------------------------------------------- constant channels
def _constant_channel(tmp_path, channel=1, value=7):
  arrays = _arrays()
  arrays["x_train"][..., channel] = value
  return _save(tmp_path, **arrays), arrays


def test_constant_channel_std_is_floored_with_a_warning(tmp_path, capsys):
  path, _ = _constant_channel(tmp_path)
  ds = load("npz", path=path)
  assert ds.std[1] == pytest.approx(statistics.MIN_STD) and statistics.MIN_STD == pytest.approx(1 / 255)
  assert ds.std[0] > 0.2 and ds.std[2] > 0.2  # the others are untouched
  assert ds.mean[1] == pytest.approx(7 / 255)
  out = capsys.readouterr().out
  assert f"Warning: {path}: training images channel 1 is constant; its std is floored at 1/255" in out
  assert "channel 0" not in out and "channel 2" not in out


def test_constant_channel_normalize_is_finite(tmp_path):
  path, arrays = _constant_channel(tmp_path)
  ds = load("npz", path=path)
  train = data.normalize(ds.train.source.images, ds.mean, ds.std)
  test = data.normalize(ds.test.source.images, ds.mean, ds.std)  # channel 1 varies in the test set
  assert np.isfinite(np.asarray(train)).all() and np.isfinite(np.asarray(test)).all()
  np.testing.assert_allclose(np.asarray(train)[..., 1], 0, atol=1e-4)  # (float32 rounding of the mean)
  assert np.abs(np.asarray(test)).max() <= 255  # at most 255 grey levels from the mean, over one
  # Augmented batches too: the crop's zero padding differs from the constant value.
  augmented = data.augment_batch(
    jax.random.split(jax.random.key(0), len(ds.train)), jnp.asarray(ds.train.source.images), crop_pad=2, flip=True
  )
  assert np.isfinite(np.asarray(data.normalize(augmented, ds.mean, ds.std, dtype=jnp.bfloat16), np.float32)).all()


def test_blank_grayscale_dataset(tmp_path, capsys):
  arrays = _arrays(shape=(6, 6))
  arrays["x_train"][:] = 0
  ds = load("npz", path=_save(tmp_path, **arrays))
  assert ds.std == (pytest.approx(statistics.MIN_STD),) and ds.mean == (0.0,)
  assert np.isfinite(np.asarray(data.normalize(ds.test.source.images, ds.mean, ds.std))).all()
  assert "training images channel 0 is constant" in capsys.readouterr().out


def test_nearly_constant_channel(capsys):
  x = np.full((50, 4, 4, 2), 100, np.uint8)
  x[..., 0] = np.random.default_rng(0).integers(0, 256, x.shape[:3])
  x[0, 0, 0, 1] = 101  # std ~0.035 grey levels: below one, floored
  mean, std = statistics.channel_mean_std(x, where="here")
  assert std[1] == pytest.approx(statistics.MIN_STD) and std[0] > 0.2
  assert mean[1] == pytest.approx((100 + 1 / 800) / 255)
  assert "here channel 1 is nearly constant (std 0.0353 grey levels)" in capsys.readouterr().out


def test_normalize_floors_a_zero_std():
  images = jnp.asarray(np.arange(2 * 2 * 2 * 3).reshape(2, 2, 2, 3).astype(np.uint8))
  out = np.asarray(data.normalize(images, (0.0, 0.0, 0.0), (0.0, 0.5, 0.5)))
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out[..., 0], np.asarray(images)[..., 0] / 255 / statistics.MIN_STD, rtol=1e-5)


# -------------------------------------------------------------------------------- class inference (npz)
def test_inferred_classes_printed_once(tmp_path, capsys):
  ds = load("npz", path=_save(tmp_path, **_arrays(classes=10)))
  assert ds.num_classes == 10
  out = capsys.readouterr().out
  assert (
    out.count("npz: 10 classes inferred from y_train/y_test (labels 0..9; rarest in y_train: class 0, 2 examples)") == 1
  )


def test_inferred_classes_silent_off_process_zero(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert load("npz", path=_save(tmp_path, **_arrays(classes=10))).num_classes == 10
  assert "inferred" not in capsys.readouterr().out


def test_stray_training_label_shows_in_the_printed_line(tmp_path, capsys):
  # One 10 in a 0-9 training set leaves no gap; the printed line is what tells.
  arrays = _arrays(n_train=21, classes=10)
  arrays["y_train"][20] = 10  # (was class 0, which keeps two examples)
  ds = load("npz", path=_save(tmp_path, **arrays))
  assert ds.num_classes == 11
  assert (
    "npz: 11 classes inferred from y_train/y_test (labels 0..10; rarest in y_train: class 10, "
    "1 example)" in capsys.readouterr().out
  )


def test_gap_in_training_labels_is_an_error(tmp_path):
  arrays = _arrays(classes=5)
  arrays["y_train"][arrays["y_train"] == 2] = 1
  arrays["y_test"][arrays["y_test"] == 2] = 0
  path = _save(tmp_path, **arrays)
  with pytest.raises(
    ValueError,
    match=r"cannot infer the number of classes: y_train has no example of "
    r"classes \[2\] \(labels span 0..4\)\. .*set num_classes in the config to "
    "allow it",
  ) as info:
    load("npz", path=path)
  assert path in str(info.value) and "y_test" not in str(info.value)


def test_test_class_unseen_in_training_is_an_error(tmp_path, capsys):
  arrays = _arrays(classes=10)
  arrays["y_test"][4] = 10  # a stray label in the test set
  path = _save(tmp_path, **arrays)
  with pytest.raises(
    ValueError,
    match=r"y_test has classes \[10\] that never occur in y_train\. .*"
    "set num_classes in the config to allow it",
  ) as info:
    load("npz", path=path)
  assert path in str(info.value)
  assert "inferred" not in capsys.readouterr().out


def test_gap_and_unseen_reported_together(tmp_path):
  # Each missing class is named once: in neither split (4, 5), or in y_test only (1, 6).
  arrays = _arrays(classes=4)
  arrays["y_train"][arrays["y_train"] == 1] = 0
  arrays["y_test"][:2] = [6, 1]
  with pytest.raises(
    ValueError,
    match=r"y_train has no example of classes \[4, 5\] \(labels span 0..6\); "
    r"y_test has classes \[1, 6\] that never occur in y_train\.",
  ):
    load("npz", path=_save(tmp_path, **arrays))


def test_long_class_lists_are_shortened(tmp_path):
  arrays = _arrays(n_train=4, classes=2)
  arrays["y_test"][0] = 99
  arrays["y_train"][0] = 60  # no example of 2..59 and 61..98: 96 classes
  with pytest.raises(ValueError, match=r"classes \[2, 3, .*, 21\] and 76 more"):
    load("npz", path=_save(tmp_path, **arrays))


def test_single_class_is_an_error(tmp_path):
  arrays = _arrays()
  arrays["y_train"][:] = 0
  arrays["y_test"][:] = 0
  with pytest.raises(ValueError, match="every label in y_train and y_test is 0, a single class"):
    load("npz", path=_save(tmp_path, **arrays))


# -------------------------------------------------------------------------------- given num_classes (npz)
def test_given_num_classes_allows_gaps_and_unseen_test_classes(tmp_path, capsys):
  arrays = _arrays(classes=5)
  arrays["y_train"][arrays["y_train"] == 2] = 1  # gap
  arrays["y_test"][0] = 7  # unseen in training
  ds = load("npz", path=_save(tmp_path, **arrays), num_classes=12)
  assert ds.num_classes == 12
  assert "inferred" not in capsys.readouterr().out


@pytest.mark.parametrize("key, index, value", [("y_train", 5, 10), ("y_test", 3, 12)])
def test_given_num_classes_rejects_larger_labels(tmp_path, key, index, value):
  arrays = _arrays(classes=10)
  arrays[key][index] = value
  arrays[key][index + 1] = value  # a later one: the first index is reported, the count covers both
  path = _save(tmp_path, **arrays)
  with pytest.raises(
    ValueError,
    match=rf"{key}\[{index}\] = {value} is out of range for num_classes=10; "
    rf"valid range is \[0, 9\] \(labels of {key} outside it: 2\)",
  ) as info:
    load("npz", path=path, num_classes=10)
  assert path in str(info.value)


def test_given_num_classes_checked_on_the_whole_training_set(tmp_path):
  # The reported index is the file's: a validation split (val_fraction) is taken later, by the trainer.
  arrays = _arrays(classes=10)
  arrays["y_train"][17] = 10
  with pytest.raises(ValueError, match=r"y_train\[17\] = 10 is out of range"):
    load("npz", path=_save(tmp_path, **arrays), num_classes=10)


# -------------------------------------------------------------------------------- validate num_classes
@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(name="digits", num_classes=1), r"num_classes=1 is out of range; valid range is >= 2"),
    (dict(name="digits", num_classes=-3), r"num_classes=-3 is out of range"),
    (dict(name="digits", num_classes=True), r"num_classes=True must be an integer >= 2"),
    (dict(name="digits", num_classes=5), r"num_classes=5 does not match 'digits', which has 10 classes"),
    (dict(name="cifar10", num_classes=100), "num_classes=100 does not match 'cifar10', which has 10 classes"),
    (dict(name="cifar100_n", num_classes=10), "num_classes=10 does not match 'cifar100_n', which has 100"),
  ],
)
def test_validate_num_classes(kwargs, match):
  # (A float num_classes is refused by the typed config itself: ConfigDict fields keep their type.)
  with pytest.raises(ValueError, match=match):
    data.validate(data_config(**kwargs))


def test_validate_accepts_num_classes():
  data.validate(data_config("digits", num_classes=10))
  data.validate(data_config("cifar100", num_classes=100))
  data.validate(data_config("digits", num_classes=0))  # 0: the dataset's own count


def test_digits_with_matching_num_classes():
  assert load("digits", num_classes=10).num_classes == 10
  with pytest.raises(ValueError, match="num_classes=11 does not match 'digits', which has 10 classes"):
    load("digits", num_classes=11)


@pytest.fixture
def mock_tfds(tfds_mock):
  with tfds_mock(num_examples=12):
    yield


@pytest.mark.parametrize("name", [n for n in DATASETS if SPECS[n].kind == "tfds"])
def test_tfds_spec_num_classes_matches_metadata(mock_tfds, name):
  # validate() trusts Spec.num_classes; the TFDS metadata is the authority.
  spec = SPECS[name]
  ds = load(name, num_classes=spec.num_classes)
  assert ds.num_classes == spec.num_classes


def test_tfds_num_classes_mismatch_checked_at_load(mock_tfds):
  # Reached only if Spec and the metadata disagree; checked before the split is read.
  with pytest.raises(ValueError, match="num_classes=5 does not match 'mnist', which has 10 classes"):
    tfds_data.open_split("mnist", "train", None, image_size=None, num_classes=5)
