"""The trainer's M augmented views per example for a loss that takes them (GJS, `Loss.num_views` > 1):
how the views are keyed, the check before compiling, and end-to-end training with M = 2 and 3 on digits
(resume and 1 vs 4 simulated devices, from conftest)."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import GAMMA_64, assert_same_run, build, history, one_chunk, tiny

from experiments import data, train, train_lib

GJS = "generalized_jensen_shannon_divergence"
# The label's weight, then one per view; M = len - 1.
WEIGHTS = {2: (0.5, 0.25, 0.25), 3: (0.4, 0.2, 0.2, 0.2)}


def gjs(num_views, **overrides):
  """A tiny digits config training GJS over `num_views` views, with random crops (digits has none by default)."""
  return tiny(**{"loss.name": GJS, "loss.js_weights": WEIGHTS[num_views], "data.augment": "crop"}, **overrides)


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def test_view_zero_is_the_single_view_augmentation_and_the_views_differ():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1)), jnp.uint8)
  keys = _keys(16)
  views = np.asarray(data.augment_views(keys, images, num_views=3, crop_pad=1, flip=False))
  assert views.shape == (3, 16, 8, 8, 1)
  np.testing.assert_array_equal(views[0], data.augment_batch(keys, images, crop_pad=1, flip=False))
  # A crop with 1 px padding has 9 offsets: two independent views of 16 images all coinciding has
  # probability 9**-16 per pair.
  for a, b in ((0, 1), (0, 2), (1, 2)):
    assert not np.array_equal(views[a], views[b])
  # A view depends on its example's key only (the global position), not on the rest of the batch.
  np.testing.assert_array_equal(
    data.augment_views(keys[5:9], images[5:9], num_views=3, crop_pad=1, flip=False), views[:, 5:9]
  )
  with pytest.raises(ValueError, match="every view the same image"):
    data.augment_views(keys, images, num_views=2, crop_pad=0, flip=False)


def test_program_gives_the_loss_its_views():
  ds = data.load(gjs(2).data)
  prog = build(gjs(2), ds)
  assert prog.loss_fn.num_views == 2 and prog.crop_pad == 1
  images = jnp.asarray(ds.train.source.read_many(np.arange(8)), jnp.uint8)
  key, positions = jax.random.key(3), jnp.arange(8)
  views = train_lib._preprocess(prog, images, key, positions, num_views=2)
  one = train_lib._preprocess(prog, images, key, positions)
  assert views.shape == (2, *one.shape)
  np.testing.assert_array_equal(views[0], one)  # view 0: exactly the single-view batch
  assert not np.array_equal(views[0], views[1])


def test_views_without_augmentation_are_rejected_before_compiling(tmp_path):
  c = tiny(**{"loss.name": GJS})  # digits: no augmentation by default
  with pytest.raises(ValueError, match=r"2 augmented views .* data.augment='default' .* identical"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("model, num_views", [("mlp", 2), pytest.param("small_cnn", 3, marks=pytest.mark.slow)])
def test_views_one_step_on_one_device_equals_four_to_reduction_order(model, num_views):
  # Views keyed by the global example position: the same augmented images on 1 and 4 devices; small_cnn's
  # BatchNorm normalises each view by that view's global batch statistics.
  ds = data.load(gjs(num_views).data)
  outs = []
  for n in (1, 4):
    _, new, m = one_chunk(build(gjs(num_views, num_devices=n, model=model), ds), ds, 1)
    outs.append((float(m["train_loss"][0, 0]), jax.tree.map(np.asarray, new.params)))
  (loss1, params1), (loss4, params4) = outs
  # The per-example losses are identical up to the order of the sums inside each (K = 10 terms, and the
  # BatchNorm statistics over 64 examples); the batch mean of 64 of them is then summed in another order.
  np.testing.assert_allclose(loss1, loss4, rtol=GAMMA_64)
  # One SGD step (lr 0.05) moves the parameters by lr * gradient; the gradient's 64-term sums (per view)
  # round within GAMMA_64 of their magnitude, and GJS's gradient terms are at most its scale
  # Z = -1 / ((1 - pi_1) log(1 - pi_1)) <= 3.3 times a softmax difference (<= 1). A factor 5 above that
  # leaves room for the per-layer products of O(1) activations.
  scale = -1.0 / ((1.0 - WEIGHTS[num_views][0]) * np.log1p(-WEIGHTS[num_views][0]))
  atol = 0.05 * GAMMA_64 * scale * 5
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=atol), params1, params4)


@pytest.mark.slow
@pytest.mark.parametrize("num_views", [2, 3])
def test_views_resume_exactly(tmp_path, num_views):
  # The views of every step come from (seed, step, global position, view index): a run that loses its
  # last epoch and resumes replays exactly what the uninterrupted run did.
  full, cut = tmp_path / "full", tmp_path / "cut"
  summary = train.train_and_evaluate(gjs(num_views, num_epochs=3), str(full))
  train.train_and_evaluate(gjs(num_views, num_epochs=3), str(cut))
  ckpts = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(ckpts[-1]))
  os.remove(cut / "summary.json")
  resumed = train.train_and_evaluate(gjs(num_views, num_epochs=3), str(cut))
  assert resumed["epochs_completed"] == 3
  assert_same_run(full, cut)  # exactly
  assert summary["test_accuracy_last"] > 0.5  # it learns (chance is 0.1)


@pytest.mark.slow
def test_views_one_device_equals_four(tmp_path):
  one = train.train_and_evaluate(gjs(2, num_devices=1), str(tmp_path / "1"))
  four = train.train_and_evaluate(gjs(2, num_devices=4), str(tmp_path / "4"))
  assert one["num_devices"] == 1 and four["num_devices"] == 4
  # Two epochs (38 steps) amplify the one-step rounding above (checked tightly there); these bounds catch
  # views keyed per device or a per-device statistic, which change epoch losses by percents.
  assert_same_run(tmp_path / "1", tmp_path / "4", loss_rtol=1e-3, acc_atol=0.01)
  assert history(tmp_path / "4")[-1]["train_loss"][0] > 0
