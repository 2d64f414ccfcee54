"""experiments/finetune.py: loading pretrained weights (msgpack, orbax), merging, freezing the backbone."""

import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import checkpoints, finetune, optimizers, train_lib
from experiments import mesh as mesh_lib


class Net(nn.Module):
  """Small stand-in for the project's models: a backbone (Dense_0 + BatchNorm) and a Dense 'head'."""

  num_classes: int = 3
  width: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(self.width)(x)))
    return nn.Dense(self.num_classes, name="head")(x)


def variables(seed=0, **kw):
  v = Net(**kw).init(jax.random.key(seed), jnp.zeros((1, 5)))
  # Non-trivial BatchNorm statistics, so that a test notices when they are not the loaded ones.
  v = {"params": v["params"], "batch_stats": jax.tree.map(lambda a: a + seed + 0.5, v["batch_stats"])}
  return jax.tree.map(np.asarray, v)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def write_msgpack(path, tree):
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(tree))
  return str(path)


def test_msgpack_round_trip(tmp_path):
  pre = variables(1)
  assert_trees_equal(finetune.load_pretrained(write_msgpack(tmp_path / "w.msgpack", pre)), pre)
  only_params = finetune.load_pretrained(write_msgpack(tmp_path / "p.msgpack", {"params": pre["params"]}))
  assert only_params["batch_stats"] == {}
  assert_trees_equal(only_params["params"], pre["params"])


def save_train_state(workdir, trees, step=7):
  """A real checkpoint as train.py writes it: a TrainState whose leaves have a replica axis of 2 (replica 1
  differs, so that taking the wrong one shows)."""
  stack = lambda t: jax.tree.map(lambda a: np.stack([a, a + 1]), t)
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  state = train_lib.TrainState(
    step=np.full(2, step, np.int32),
    params=stack(trees["params"]),
    batch_stats=stack(trees["batch_stats"]),
    opt_state=jax.vmap(optax.sgd(0.1, momentum=0.9).init)(stack(trees["params"])),
    loss_state={"weights": np.ones((2, 6), np.float32)},
  )
  ckpt = checkpoints.Checkpointer(str(workdir), keep=2)
  ckpt.save(step, mesh_lib.replicate(mesh, state), {"step": step})
  ckpt.wait()
  ckpt.close()


def test_orbax_checkpoint_every_path_form(tmp_path):
  old, pre = variables(0), variables(1)
  save_train_state(tmp_path, old, step=3)
  save_train_state(tmp_path, pre, step=7)  # the latest: what a workdir or checkpoints/ means
  for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "7"):
    assert_trees_equal(finetune.load_pretrained(str(path)), pre)
  assert_trees_equal(finetune.load_pretrained(str(tmp_path / "checkpoints" / "3")), old)


def test_merge_reinitialises_a_head_of_another_class_count():
  init, pre = variables(0, num_classes=5), variables(1, num_classes=3)
  merged, notes = finetune.merge(init, pre)
  assert_trees_equal(merged["params"]["head"], init["params"]["head"])
  assert_trees_equal(merged["params"]["Dense_0"], pre["params"]["Dense_0"])
  assert_trees_equal(merged["batch_stats"], pre["batch_stats"])
  assert len(notes) == 1 and "head" in notes[0] and "(4, 3) -> (4, 5)" in notes[0]
  # Same class count: everything is the pretrained one, nothing to note.
  merged, notes = finetune.merge(variables(0), pre)
  assert_trees_equal(merged, pre) and notes == []


def test_merge_casts_to_the_model_dtype():
  pre = jax.tree.map(lambda a: a.astype(np.float64), variables(1))
  merged, _ = finetune.merge(variables(0), pre)
  assert {a.dtype for a in jax.tree.leaves(merged)} == {np.dtype(np.float32)}


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda v: variables(1, width=6), "params/Dense_0/kernel: model (5, 4) vs pretrained (5, 6)"),
    (lambda v: {**v, "batch_stats": {}}, "batch_stats/BatchNorm_0/mean: model (4,), missing"),
    (
      lambda v: {**v, "params": {**v["params"], "Dense_9": {"bias": np.zeros(2)}}},
      "params/Dense_9/bias: pretrained (2,), not in the model",
    ),
    (
      lambda v: {**v, "params": {**v["params"], "head": {"kernel": v["params"]["head"]["kernel"]}}},
      "params/head/bias: model (3,), missing",
    ),
  ],
)
def test_merge_rejects_another_architecture(change, message):
  with pytest.raises(ValueError, match="do not fit the model") as e:
    finetune.merge(variables(0), change(variables(1)))
  assert message in str(e.value)


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    finetune.load_pretrained(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no complete checkpoint"):
    finetune.load_pretrained(str(tmp_path / "empty"))
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)  # a workdir whose first save never finished
  with pytest.raises(ValueError, match="no complete checkpoint"):
    finetune.load_pretrained(str(tmp_path / "run"))
  with pytest.raises(ValueError, match="no 'params' tree"):
    finetune.load_pretrained(write_msgpack(tmp_path / "bare.msgpack", variables(1)["params"]))


def test_corrupt_msgpack(tmp_path):
  good = flax.serialization.to_bytes(variables(1))
  for name, data in (
    ("truncated", good[: len(good) // 2]),
    ("noise", np.random.default_rng(0).bytes(300)),
    ("zip", b"PK\x03\x04" + good[4:]),
  ):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="not a readable flax msgpack file"):
      finetune.load_pretrained(str(tmp_path / name))


def test_freeze_backbone_moves_only_the_head():
  params = variables(0)["params"]
  assert finetune.trainable_mask(params) == {
    "Dense_0": {"kernel": False, "bias": False},
    "BatchNorm_0": {"scale": False, "bias": False},
    "head": {"kernel": True, "bias": True},
  }
  tx = finetune.freeze_backbone(optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.5, momentum=0.9)))
  x, y = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32), np.arange(8) % 3
  bs = variables(0)["batch_stats"]

  def loss(p):
    logits, _ = Net().apply({"params": p, "batch_stats": bs}, x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  p, opt_state = params, tx.init(params)
  for _ in range(3):
    updates, opt_state = tx.update(jax.grad(loss)(p), opt_state, p)
    p = optax.apply_updates(p, updates)
  backbone = lambda t: {k: v for k, v in t.items() if k != "head"}
  assert_trees_equal(backbone(p), backbone(params))  # bit-identical despite weight decay
  assert not np.allclose(p["head"]["kernel"], params["head"]["kernel"])


def test_trainable_mask_needs_a_head():
  with pytest.raises(ValueError, match="top-level params entry 'head'.*Dense_0"):
    finetune.trainable_mask({"Dense_0": {"kernel": np.zeros(2)}, "Dense_1": {"kernel": np.zeros(2)}})


@pytest.mark.parametrize("optimizer", optimizers.OPTIMIZERS)
def test_optimizer_states_do_not_depend_on_param_values(optimizer):
  # Why initialize() keeps the optimizer state of the random init after loading other parameters.
  from configs import default

  config = default.get_config()
  config.optimizer, config.l1_weight_decay, config.grad_clip_norm = optimizer, 1e-4, 1.0
  tx = finetune.freeze_backbone(optimizers.create(config, steps_per_epoch=10))
  a, b = variables(0)["params"], variables(1)["params"]
  assert_trees_equal(tx.init(a), tx.init(b))


def test_initialize_broadcasts_to_every_replica(tmp_path, capsys):
  R = 2
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  inits = [variables(s, num_classes=5) for s in (10, 11)]  # each replica (seed) has its own init
  stack = lambda k: jax.tree.map(lambda *a: np.stack(a), *[v[k] for v in inits])
  state = mesh_lib.replicate(
    mesh,
    train_lib.TrainState(
      step=np.zeros(R, np.int32),
      params=stack("params"),
      batch_stats=stack("batch_stats"),
      opt_state=jax.vmap(optax.sgd(0.1).init)(stack("params")),
      loss_state={},
    ),
  )
  pre = variables(1, num_classes=3)
  config = types.SimpleNamespace(init_from=write_msgpack(tmp_path / "w.msgpack", pre))
  new = finetune.initialize(config, state, R)
  assert "Initialised from msgpack file" in capsys.readouterr().out
  for r in range(R):
    take = lambda t: jax.tree.map(lambda a: np.asarray(a)[r], t)
    assert_trees_equal(take(new.params)["Dense_0"], pre["params"]["Dense_0"])
    assert_trees_equal(take(new.batch_stats), pre["batch_stats"])
    assert_trees_equal(take(new.params)["head"], inits[r]["params"]["head"])  # seeds keep differing there
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    assert a.sharding == b.sharding
  assert finetune.initialize(types.SimpleNamespace(init_from=""), state, R) is state


# ------------------------------------------------------------------------------ end to end, in the trainer
def test_pretrain_on_one_label_set_then_fine_tune_on_another(tmp_path):
  """Pre-train on digits 0-4 (an npz of 5 classes), fine-tune on all 10 digits: from the run's orbax
  checkpoint with the backbone frozen, and from a msgpack export with everything training."""
  from configs import digits
  from experiments import data, train
  from tests.data_configs import data_config

  d = data.load(data_config("digits"))
  keep_train, keep_test = d.train.labels < 5, d.test.labels < 5
  npz = tmp_path / "digits04.npz"
  np.savez(
    npz,
    x_train=d.train.source.images[keep_train],
    y_train=d.train.labels[keep_train],
    x_test=d.test.source.images[keep_test],
    y_test=d.test.labels[keep_test],
  )

  def config(**overrides):
    c = digits.get_config()
    c.num_epochs, c.progress, c.batch_size, c.num_devices = 3, False, 64, 2
    for k, v in overrides.items():
      c[k] = v
    return c

  npz_config = config()
  npz_config.data.name, npz_config.data.path = "npz", str(npz)
  pre = train.train_and_evaluate(npz_config, str(tmp_path / "pre"))
  assert pre["status"] == "completed" and pre["test_accuracy_last"] > 0.5
  pretrained = finetune.load_pretrained(str(tmp_path / "pre"))
  assert pretrained["params"]["head"]["kernel"].shape[-1] == 5

  frozen = train.train_and_evaluate(
    config(init_from=str(tmp_path / "pre"), freeze_backbone=True), str(tmp_path / "frozen")
  )
  assert frozen["status"] == "completed"
  tuned = finetune.load_pretrained(str(tmp_path / "frozen"))
  assert tuned["params"]["head"]["kernel"].shape[-1] == 10
  backbone = lambda v: {k: t for k, t in v["params"].items() if k != "head"}
  assert_trees_equal(backbone(tuned), backbone(pretrained))  # frozen: not a bit moved
  assert_trees_equal(tuned["batch_stats"], pretrained["batch_stats"])  # eval-mode BatchNorm
  # The head learnt all 10 classes on the pretrained features (chance: 0.1).
  assert frozen["test_accuracy_last"] > 0.5

  path = tmp_path / "pre.msgpack"
  write_msgpack(path, {"params": pretrained["params"], "batch_stats": pretrained["batch_stats"]})
  full = train.train_and_evaluate(config(init_from=str(path), num_epochs=1), str(tmp_path / "full"))
  assert full["status"] == "completed"
  moved = finetune.load_pretrained(str(tmp_path / "full"))
  assert any(
    not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(backbone(moved)), jax.tree.leaves(backbone(pretrained)))
  )


def test_freeze_backbone_needs_init_from_and_a_missing_file_is_named():
  from configs import digits
  from experiments import settings

  c = digits.get_config()
  c.freeze_backbone = True
  with pytest.raises(ValueError, match="init_from"):
    settings.validate_static(c)
  c.init_from = "/no/such/weights.msgpack"
  with pytest.raises(ValueError, match="/no/such/weights.msgpack"):
    settings.validate_static(c)
