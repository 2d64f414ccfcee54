"""End-to-end training on tiny configs (digits, 4 simulated CPU devices from conftest)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import digits
from experiments import checkpoints, data, models, records, rng, settings, train, train_lib
from experiments.mesh import replicate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  c = digits.get_config()
  c.num_epochs = 2
  c.batch_size = 64
  c.eval_batch_size = 64
  c.progress = False
  c.train_eval_max_examples = 0
  for key, value in overrides.items():
    if key.startswith("loss."):
      c.loss[key[5:]] = value
    elif key.startswith("noise."):
      c.noise[key[6:]] = value
    elif key.startswith("data."):
      c.data[key[5:]] = value
    else:
      c[key] = value
  return c


def history(workdir):
  return records.read_history(str(workdir), timing=False)


def one_chunk(prog, ds, steps, seed=0):
  """(state, new state, metrics) of the first `steps` steps from a fresh state, fed as the trainer feeds."""
  keys = rng.replica_keys([seed])
  state = train_lib.init_state(prog, keys, ds.image_shape)
  keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(keys)))
  labels = replicate(prog.mesh, ds.train.labels[None])
  feed = data.train_feed(ds, prog.mesh, keys, [seed], prog.batch_size, prog.steps_per_epoch, None)
  feed.start_epoch(0)
  before = jax.tree.map(np.asarray, state)
  new, metrics = train_lib.train_chunk_fn(prog)(
    state, keys, labels, jnp.zeros_like(labels, bool), feed.next(steps), jnp.arange(0, steps, dtype=jnp.int32)
  )
  return before, new, metrics


def build(c, ds):
  return train.make_program(c, ds, settings.build_loss(c, ds.num_classes, settings.noise_settings(c)))


def assert_same_run(a, b, loss_rtol=0.0, acc_atol=0.0):
  """Same per-epoch metrics; tolerances allow float reduction-order differences (device count)."""
  ha, hb = history(a), history(b)
  assert len(ha) == len(hb)
  for ra, rb in zip(ha, hb):
    np.testing.assert_allclose(ra["train_loss"], rb["train_loss"], rtol=loss_rtol, err_msg="train_loss")
    for key in ("test_accuracy", "train_memorised_noisy_subset", "clipped_fraction"):
      np.testing.assert_allclose(ra[key], rb[key], atol=acc_atol, err_msg=key)


# Tolerances across device counts. Splitting a global batch of B = 64 over 4 devices changes only the order
# of float32 sums (per-device partial sums, then a cross-device psum/pmean). For a sum of n terms the
# rounding error is bounded by n*u*sum|x_i| (Higham's gamma_n), u = 2**-24: with n = 64, ~3.8e-6 relative to
# the sum of magnitudes. One step from the same parameters must agree to that bound; every later step
# starts from parameters that already differ by such roundings, which training then amplifies, so runs of
# several epochs can only be compared loosely (a per-device instead of a global statistic moves the first
# step by orders of magnitude more, which the tight check below catches).
GAMMA_64 = 64 * 2.0**-24


@pytest.mark.parametrize(
  "model, loss",
  [
    ("small_cnn", "softmax_cross_entropy"),
    ("mlp", "binary_cross_entropy_dynamic_clipping"),
    ("mlp", "early_learning_regularization"),
  ],
)
def test_one_step_on_one_device_equals_four_to_reduction_order(model, loss):
  # BatchNorm (small_cnn) and a batch-statistics loss: both must see the global batch.
  ds = data.load(tiny().data)
  outs = []
  for n in (1, 4):
    # Clipping from the first step (no warm-up), so this step's statistic is over the global batch.
    clip = {"loss.warmup_epochs": 0} if "clipping" in loss else {}
    c = tiny(num_devices=n, model=model, **{"loss.name": loss}, **clip)
    _, new, m = one_chunk(build(c, ds), ds, 1)
    outs.append(
      (float(m["train_loss"][0, 0]), jax.tree.map(np.asarray, new.params), jax.tree.map(np.asarray, new.loss_state))
    )
  (loss1, params1, state1), (loss4, params4, state4) = outs
  np.testing.assert_allclose(loss1, loss4, rtol=GAMMA_64)
  # Per-example loss state (ELR's targets): every device's rows reach the replicated state, written at the
  # same positions; each row is computed from its own example alone, so the values agree to float rounding
  # of one softmax (a few ulps of values <= 1).
  assert jax.tree.structure(state1) == jax.tree.structure(state4)
  for a, b in zip(jax.tree.leaves(state1), jax.tree.leaves(state4)):
    np.testing.assert_allclose(a, b, rtol=0, atol=4 * 2.0**-24)
    if loss == "early_learning_regularization":
      assert (np.abs(a).sum(-1) > 0).sum() == c.batch_size  # exactly the batch's rows were written
  # One update: params differ by lr * (gradient rounding), bounded by lr * GAMMA_64 * |grad terms|; the
  # gradient terms are O(1) here, so 1e-6 absolute with lr = 0.05 leaves a factor of ~5 over the bound.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=0.05 * GAMMA_64 * 5), params1, params4)


@pytest.mark.parametrize(
  "model, loss", [("small_cnn", "softmax_cross_entropy"), ("mlp", "binary_cross_entropy_dynamic_clipping")]
)
def test_one_device_equals_four(tmp_path, model, loss):
  # The quantile statistic clips in every batch, so the global-batch path is exercised at every step.
  # (From the first step: the default 5-epoch warm-up would not end within these 2 epochs.)
  extra = {"loss.statistic": "quantile", "loss.warmup_epochs": 0} if "clipping" in loss else {}
  cfg = lambda n: tiny(num_devices=n, model=model, **{"loss.name": loss}, **extra)
  one = train.train_and_evaluate(cfg(1), str(tmp_path / "1"))
  four = train.train_and_evaluate(cfg(4), str(tmp_path / "4"))
  assert one["num_devices"] == 1 and four["num_devices"] == 4
  # Two epochs (38 steps) amplify the per-step rounding above; these loose bounds catch a wrong
  # reduction (which changes epoch losses by percents), not rounding (observed ~1e-5).
  assert_same_run(tmp_path / "1", tmp_path / "4", loss_rtol=1e-3, acc_atol=0.01)
  if loss != "softmax_cross_entropy":
    assert 0 < history(tmp_path / "4")[-1]["clipped_fraction"][0] < 1  # per replica


def test_loop_free_equals_scanned_chunks(tmp_path):
  # One step per call without a while loop (the CPU default for conv models) trains the same model as
  # lax.scan chunks; eval in one-batch calls gives the same predictions. Only fusion order may differ.
  cfg = lambda lf: tiny(model="small_cnn", loop_free=lf, eval_batch_size=32)
  assert settings.loop_free(cfg(None), models.create("small_cnn", num_classes=10, input_shape=(8, 8, 1)))
  assert not settings.loop_free(cfg(None), models.create("mlp", num_classes=10, input_shape=(8, 8, 1)))
  train.train_and_evaluate(cfg(True), str(tmp_path / "free"))
  train.train_and_evaluate(cfg(False), str(tmp_path / "scan"))
  # Fusion order differs between the two programs: per step the same few-ulp roundings as across device
  # counts (GAMMA_64 above), amplified over 38 steps; the loose bound catches a wrong step, not rounding.
  assert_same_run(tmp_path / "free", tmp_path / "scan", loss_rtol=1e-3, acc_atol=0.01)


def test_summary_contents(tmp_path):
  s = train.train_and_evaluate(tiny(), str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    on_disk = json.load(f)
  for key in (
    "test_accuracy_last",
    "test_accuracy_best",
    "best_epoch",
    "noise_rate_realised",
    "train_seconds",
    "config",
  ):
    assert on_disk[key] is not None, key
  assert on_disk["status"] == "completed" and on_disk["epochs_completed"] == 2
  assert 0.35 < s["noise_rate_realised"] < 0.45  # symmetric 0.4: exact per-class counts, floors
  assert on_disk["config"]["loss"]["name"] == "softmax_cross_entropy"
  assert len(history(tmp_path)) == 2
  assert os.listdir(tmp_path / "tb")


def test_vmapped_seeds_equal_separate_runs(tmp_path):
  together = train.train_and_evaluate(tiny(num_seeds=2, seed=5), str(tmp_path / "both"))
  for r, seed in enumerate((5, 6)):
    alone = train.train_and_evaluate(tiny(seed=seed), str(tmp_path / str(seed)))
    ha, hb = history(tmp_path / "both"), history(tmp_path / str(seed))
    for ra, rb in zip(ha, hb):
      np.testing.assert_allclose(ra["test_accuracy"][r], rb["test_accuracy"][0], atol=1e-6)
      np.testing.assert_allclose(
        ra["train_memorised_noisy_subset"][r], rb["train_memorised_noisy_subset"][0], atol=1e-6
      )
    assert together["replicas"][r]["noise_rate_realised"] == alone["noise_rate_realised"]
  # Each seed gets its own noise draw.
  assert together["replicas"][0]["noise"] != together["replicas"][1]["noise"]


def test_resume_after_losing_the_last_epoch(tmp_path):
  full = tmp_path / "full"
  train.train_and_evaluate(tiny(num_epochs=3), str(full))
  cut = tmp_path / "cut"
  train.train_and_evaluate(tiny(num_epochs=3), str(cut))
  # Simulate a crash during epoch 3: its checkpoint and summary never got written.
  ckpts = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(ckpts[-1]))
  os.remove(cut / "summary.json")
  resumed = train.train_and_evaluate(tiny(num_epochs=3), str(cut))
  assert resumed["epochs_completed"] == 3
  assert_same_run(full, cut)  # exactly


def _restore(workdir, config, step):
  """(state, meta) of the checkpoint at `step`, restored into the structure a fresh run would build."""
  ds = data.load(config.data)
  prog = build(config, ds)
  abstract = train_lib.init_state(prog, rng.replica_keys([config.seed]), ds.image_shape)
  ckpt = checkpoints.Checkpointer(str(workdir), 2)
  out = ckpt._manager.restore(
    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
  )
  ckpt.close()
  return out.state, out.meta, prog, ds


@pytest.mark.parametrize("loss", ["early_learning_regularization", "sparse_regularization"])
def test_stateful_and_scheduled_losses_resume_exactly(tmp_path, loss):
  # ELR keeps an N x K target memory in the checkpoint; SR's penalty weight grows with the epoch.
  c = tiny(num_epochs=3, **{"loss.name": loss})
  full = tmp_path / "full"
  train.train_and_evaluate(c, str(full))
  cut = tmp_path / "cut"
  train.train_and_evaluate(tiny(num_epochs=3, **{"loss.name": loss}), str(cut))
  ckpts = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(ckpts[-1]))
  os.remove(cut / "summary.json")
  train.train_and_evaluate(tiny(num_epochs=3, **{"loss.name": loss}), str(cut))
  assert_same_run(full, cut)  # exactly
  assert history(full)[-1]["test_accuracy"][0] > 0.5
  if loss == "early_learning_regularization":
    mean_target = [h["loss_state_mean/targets"][0] for h in history(full)]
    assert all(0 < m <= 0.1 + 1e-6 for m in mean_target)  # rows are averaged probabilities: mean 1/K


def test_truncated_lq_prunes_the_examples_whose_label_probability_is_at_most_k(tmp_path):
  c = tiny(
    num_epochs=3,
    **{
      "loss.name": "truncated_generalized_cross_entropy",
      "loss.prune_start_epoch": 1,
      "loss.prune_every_epochs": 1,
      "noise.rate": 0.4,
    },
  )
  train.train_and_evaluate(c, str(tmp_path))
  h = history(tmp_path)
  assert h[0]["loss_state_mean/weights"] == [1.0]  # nothing pruned before prune_start_epoch
  # The weights in use during epoch 3 were computed at its start from the model saved after epoch 2.
  spe = len(data.load(c.data).train) // c.batch_size
  before, _, prog, ds = _restore(tmp_path, c, 2 * spe)
  after, _, _, _ = _restore(tmp_path, c, 3 * spe)
  images = data.normalize(ds.train.source.images, ds.mean, ds.std)
  params = jax.tree.map(lambda a: a[0], before.params)
  logits = prog.model.apply(
    {"params": params, "batch_stats": jax.tree.map(lambda a: a[0], before.batch_stats)}, images, train=False
  )
  noisy = settings.noisy_labels(c, ds, [(settings.noise_settings(c)[0], c.seed)])[0]
  p_y = np.take_along_axis(np.asarray(jax.nn.softmax(logits)), noisy.labels[:, None], axis=1)[:, 0]
  expected = (p_y > 0.5).astype(np.float32)
  weights = np.asarray(after.loss_state["weights"][0])
  # Eval-mode logits on one device vs the independent whole-set forward: float32 rounding can flip only an
  # example whose p_y sits within ~1e-6 of k; there must be none or a handful.
  near_k = np.abs(p_y - 0.5) < 1e-5
  np.testing.assert_array_equal(weights[~near_k], expected[~near_k])
  assert 0.05 < 1 - weights.mean() < 0.98
  # Pruning prefers the mislabelled: more of them are pruned than of the correctly labelled.
  assert (1 - weights[noisy.is_noisy]).mean() > (1 - weights[~noisy.is_noisy]).mean() + 0.2


# Epochs 1-2 at lr 0.05, then lr 0.05 * 1e30: training blows up during epoch 3.
EXPLODE_IN_EPOCH_3 = dict(num_epochs=4, schedule="step", lr_boundaries=(2,), lr_decay=1e30)


def _finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def test_all_finite_finds_one_bad_element_in_any_leaf_group_and_dtype():
  # 70 leaves of two dtypes: three groups of float32 leaves (32, 32, 3) and one of bfloat16. Each leaf in
  # turn gets one bad element.
  rng = np.random.default_rng(0)
  tree = {f"w{i}": jnp.asarray(rng.normal(size=(i % 5 + 1, 3)), jnp.float32) for i in range(67)}
  tree.update({f"h{i}": jnp.ones((2, 2), jnp.bfloat16) for i in range(3)})
  check = jax.jit(train_lib._all_finite)
  assert bool(check(tree)) and bool(check({}))
  for i, leaf in enumerate(tree):
    bad = (np.nan, np.inf, -np.inf)[i % 3]
    broken = dict(tree)
    broken[leaf] = tree[leaf].at[-1, -1].set(bad)
    assert not bool(check(broken)), (leaf, bad)


def test_nonfinite_stops_the_run_and_the_last_good_checkpoint_is_kept(tmp_path):
  c = tiny(**EXPLODE_IN_EPOCH_3)
  spe = len(data.load(c.data).train) // c.batch_size
  with pytest.raises(
    train.NonFiniteError,
    match=r"non-finite loss, gradient or parameters at step (\d+) "
    r"\(epoch 3\)",
  ):
    train.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    s = json.load(f)
  assert s["status"] == "failed" and "non-finite" in s["error"] and s["epochs_completed"] == 2
  ckpt = checkpoints.Checkpointer(str(tmp_path), 2)
  assert ckpt._manager.latest_step() == 2 * spe
  ckpt.close()
  state, meta, _, _ = _restore(tmp_path, c, 2 * spe)
  assert meta["step"] == 2 * spe and len(meta["history"]) == 2
  assert int(state.step[0]) == 2 * spe and _finite(state.params) and _finite(state.opt_state)


def test_skip_nonfinite_skips_and_counts_bad_steps_and_fails_beyond_its_share(tmp_path):
  # Every step of epoch 3 is non-finite: skipped and counted, and as that is more than
  # records.MAX_SKIPPED_SHARE of the steps so far the run fails (it used to report 'completed' with the
  # untrained numbers); the message promises only the checkpoint that exists (end of epoch 2).
  c = tiny(skip_nonfinite=True, **EXPLODE_IN_EPOCH_3)
  spe = len(data.load(c.data).train) // c.batch_size
  with pytest.raises(
    train.NonFiniteError, match=rf"skipped \d+ of its {3 * spe} steps.*checkpoint \(step {2 * spe}\) is kept"
  ):
    train.train_and_evaluate(c, str(tmp_path))
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["status"] == "failed" and "more than the 5%" in s["error"]
  skipped = [r["skipped_steps"][0] for r in history(tmp_path)]
  assert skipped[:2] == [0, 0] and records.MAX_SKIPPED_SHARE * 3 * spe < skipped[2] <= spe
  state, _, _, _ = _restore(tmp_path, c, 2 * spe)
  assert _finite(state.params) and _finite(state.opt_state)


def test_a_run_diverging_before_any_checkpoint_promises_none(tmp_path):
  with pytest.raises(train.NonFiniteError, match="No checkpoint was written before it"):
    train.train_and_evaluate(tiny(num_epochs=1, learning_rate=1e30), str(tmp_path))
  assert not checkpoints.has_checkpoint(str(tmp_path))


def test_a_step_whose_parameters_overflow_is_not_taken():
  # Finite loss and gradient, but an update that makes the parameters infinite (what a finite gradient
  # times a huge learning rate does): the step must be rejected like a non-finite gradient.
  c = tiny(num_epochs=1)
  ds = data.load(c.data)
  prog = build(c, ds)
  overflow = optax.GradientTransformation(
    lambda params: optax.EmptyState(),
    lambda grads, state, params=None: (jax.tree.map(lambda g: jnp.full_like(g, jnp.inf), grads), state),
  )
  prog = dataclasses.replace(prog, tx=overflow)
  before, new, metrics = one_chunk(prog, ds, 2)
  before = before.params
  assert np.isfinite(np.asarray(metrics["train_loss"])).all()
  assert not np.asarray(metrics["finite"]).any()
  assert int(new.step[0]) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, new.params), before)


def test_workdir_of_other_config_is_refused_then_moved_aside(tmp_path):
  train.train_and_evaluate(tiny(num_epochs=1), str(tmp_path / "w"))
  with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.05 -> 0.2\)"):
    train.train_and_evaluate(tiny(num_epochs=1, learning_rate=0.2), str(tmp_path / "w"))
  train.train_and_evaluate(tiny(num_epochs=1, learning_rate=0.2, overwrite=True), str(tmp_path / "w"))
  aside = [d for d in os.listdir(tmp_path) if d.startswith("w.old-")]
  assert len(aside) == 1 and os.path.exists(tmp_path / aside[0] / "summary.json")


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"noise.rate": 1.5}, r"noise.rate=1.5 is out of range; valid range is \[0, 1\]"),
    ({"noise.kind": "salt"}, r"noise.kind='salt' is unknown"),
    ({"loss.name": "hinge"}, r"loss.name='hinge' is unknown"),
    ({"loss.name": "tamed_cross_entropy", "loss.alpha": -1.0}, r"alpha=-1.0"),
    ({"model": "vit"}, r"model='vit' is unknown"),
    ({"batch_size": 66}, r"batch_size=66 is not divisible by the device count 4"),
    ({"data.name": "imagenet21k"}, r"imagenet21k"),
    ({"noise.kind": "asymmetric", "data.name": "npz", "data.path": "x.npz"}, r"x.npz"),
    ({"schedule": "step"}, r"lr_boundaries"),
    ({"loss.alpha": 2.0}, r"alpha"),  # CE takes no alpha
  ],
)
def test_bad_config_rejected_before_compiling(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny(**overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cli_rejects_typo_and_names_valid_keys(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.train",
      "--config=configs/digits.py",
      f"--workdir={tmp_path}",
      "--config.num_epoch=3",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode != 0
  assert "num_epoch" in out.stderr and "num_epochs" in out.stderr


def test_npz_dataset(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "data.npz"
  np.savez(
    path,
    x_train=rng.integers(0, 255, (256, 12, 12), dtype=np.uint8),
    y_train=rng.integers(0, 3, 256),
    x_test=rng.integers(0, 255, (64, 12, 12), dtype=np.uint8),
    y_test=rng.integers(0, 3, 64),
  )
  s = train.train_and_evaluate(
    tiny(**{"data.name": "npz", "data.path": str(path)}, num_epochs=1, model="mlp"), str(tmp_path / "run")
  )
  assert s["status"] == "completed"


def test_tfds_path_with_mock_data(tmp_path, tfds_mock):
  with tfds_mock(num_examples=128):
    s = train.train_and_evaluate(tiny(**{"data.name": "mnist"}, num_epochs=1, model="mlp"), str(tmp_path))
  assert s["status"] == "completed" and 0 <= s["test_accuracy_last"] <= 1
