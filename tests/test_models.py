"""Tests for experiments/models.py: shapes, parameter counts, BatchNorm under shard_map.

On CPU the cost of these tests is almost all XLA compilation (random-number
sampling in ``init`` is the worst), so concrete forward passes are limited to
one model per architecture family, each model is initialised once, and
everything else is checked abstractly with ``jax.eval_shape``.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments import models

# Small inputs keep the suite fast; each is at least the model's MIN_SIZE.
SHAPES = {
  "mlp": (8, 8, 1),
  "small_cnn": (16, 16, 1),  # >= 16, so the max-pool branch runs too.
  "resnet20": (8, 8, 3),
  "resnet32": (8, 8, 3),
  "resnet44": (8, 8, 3),
  "resnet56": (8, 8, 3),
  "preact_resnet18": (8, 8, 3),
  "resnet34": (8, 8, 3),
  "cnn8": (8, 8, 3),
  "imagenet_resnet18": (32, 32, 3),  # MIN_SIZE: the 7x7 stem and max pool downsample by 4.
  "imagenet_resnet50": (32, 32, 3),
}
# Inputs of the stand-ins built by _model (not registered models).
STAND_IN_SHAPES = {
  "preact_2stage": (8, 8, 3),
  "resnet_2stage": (8, 8, 3),
  "imagenet_2stage": (64, 64, 3),  # Even sides, where torchvision's padding differs from 'SAME'.
}
NUM_CLASSES = 7

# Published sizes for 10 classes and 32x32x3 inputs: He et al. 2016 Table 6
# for the CIFAR ResNets; the usual counts of the PyTorch reference code for
# PreAct ResNet-18 (DivideMix) and ResNet-34 (kuangliu / GCE).
PARAM_COUNTS = {
  "resnet20": 0.27e6,
  "resnet32": 0.46e6,
  "resnet44": 0.66e6,
  "resnet56": 0.85e6,
  "preact_resnet18": 11.17e6,
  "resnet34": 21.28e6,
}

# torchvision's resnet18 / resnet50 with 1000 classes, exactly (BatchNorm scale
# and bias included; running statistics are in 'batch_stats', not 'params').
TORCHVISION_PARAM_COUNTS = {
  "imagenet_resnet18": 11_689_512,
  "imagenet_resnet50": 25_557_032,
}

# Test-only: unoptimised XLA compiles these graphs about twice as fast.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _model(name, dtype=jnp.float32, axis_name=None):
  """A registered model, or one of the two-stage ResNets used for forward tests.

  ``preact_2stage`` / ``resnet_2stage`` / ``imagenet_2stage`` are
  ``preact_resnet18`` / ``resnet34`` / ``imagenet_resnet50`` with one block
  per stage and two stages: the same stem, blocks, identity and projection
  shortcuts, at a fraction of the compile time.
  """
  if name == "preact_2stage":
    return models.ResNet(NUM_CLASSES, (1, 1), models.PreActBlock, axis_name, dtype)
  if name == "resnet_2stage":
    return models.ResNet(NUM_CLASSES, (1, 1), models.BasicBlock, axis_name, dtype)
  if name == "imagenet_2stage":
    return models.ResNet(NUM_CLASSES, (1, 1), models.Bottleneck, axis_name, dtype, stem="imagenet")
  return models.create(name, num_classes=NUM_CLASSES, input_shape=SHAPES[name], axis_name=axis_name, dtype=dtype)


def _shape(name):
  return SHAPES[name] if name in SHAPES else STAND_IN_SHAPES[name]


def _init_fn(model, shape):
  # RBG keys: threefry sampling takes seconds longer to compile on CPU.
  key = jax.random.key(0, impl="rbg")
  return lambda: model.init(key, jnp.zeros((1,) + shape), train=False)


@functools.lru_cache(maxsize=None)
def _variables(name):
  """Concrete float32 variables, initialised once per model.

  Parameters depend neither on the compute dtype nor (for these models) on
  the spatial size, so they are shared by the bf16 and shard_map tests.
  """
  return jit(_init_fn(_model(name), _shape(name)))()


def _abstract_variables(name, shape=(32, 32, 3), num_classes=10):
  """Variable shapes without allocating or computing anything."""
  model = models.create(name, num_classes=num_classes, input_shape=shape, axis_name=None)
  return jax.eval_shape(_init_fn(model, shape))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_tests_cover_every_registered_model():
  # The shape and dtype tests below are parametrized over SHAPES: a new model must be added there.
  assert set(SHAPES) == set(models.names())


@pytest.mark.parametrize("name", models.names())
def test_every_name_creates_a_classifier(name):
  """Each listed name builds a model giving [B, K] float32 logits, both for CIFAR-sized RGB inputs and for
  the smallest grey inputs create() accepts (abstractly: shapes only); one pixel less is refused."""
  side = models.MIN_SIZE[name]
  for shape in [(32, 32, 3), (side, side, 1)]:
    model = models.create(name, num_classes=3, input_shape=shape, axis_name=None)
    variables = jax.eval_shape(_init_fn(model, shape))
    x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32, (shape, logits)
  too_small = (side - 1, side, 1)
  with pytest.raises(ValueError, match="at least" if side > 1 else "positive sides"):
    models.create(name, num_classes=3, input_shape=too_small)


def test_mlp_forward_by_hand():
  """A tiny MLP with hand-picked parameters, computed by hand."""
  model = models.MLP(num_classes=2, hidden=(2,))
  params = {
    "Dense_0": {"kernel": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "bias": jnp.array([0.0, 1.0])},
    "head": {"kernel": jnp.array([[2.0, -1.0], [3.0, 5.0]]), "bias": jnp.array([0.5, 0.0])},
  }
  x = jnp.array([1.0, -2.0]).reshape(1, 1, 2, 1)  # flattened: [1, -2]
  # hidden = relu([1, -2] @ I + [0, 1]) = relu([1, -1]) = [1, 0]; logits = [1, 0] @ W1 + b1 = [2.5, -1].
  logits = model.apply({"params": params}, x, train=False)
  np.testing.assert_allclose(logits, [[2.5, -1.0]], rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_registered_mlp_matches_numpy(dtype, tol):
  """The registered 'mlp' with random parameters, against the same network written in float64 NumPy."""
  shape, k = (4, 4, 2), 5
  model = models.create("mlp", num_classes=k, input_shape=shape, axis_name=None, dtype=dtype)
  abstract = jax.eval_shape(_init_fn(model, shape))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
  x = rng.normal(size=(3,) + shape).astype(np.float32)
  h = x.reshape(3, -1).astype(np.float64)
  assert set(params) == {"Dense_0", "Dense_1", "head"}  # Two hidden layers, then the classifier.
  layers = ["Dense_0", "Dense_1", "head"]
  for i, layer in enumerate(layers):
    h = h @ params[layer]["kernel"] + params[layer]["bias"]
    if i < len(layers) - 1:
      h = np.maximum(h, 0)
  logits = jax.jit(functools.partial(model.apply, train=False))({"params": params}, x)
  assert logits.dtype == jnp.float32 and logits.shape == (3, k)
  np.testing.assert_allclose(logits, h, rtol=tol, atol=tol * np.abs(h).max())


@pytest.mark.parametrize("name", list(SHAPES))
def test_output_shapes_and_dtypes(name):
  """Every model, abstractly: logits [B, K] float32 in train and eval mode."""
  shape, model = SHAPES[name], _model(name)
  variables = jax.eval_shape(_init_fn(model, shape))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
  logits, state = jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, x)
  eval_logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  for out in (logits, eval_logits):
    assert out.shape == (2, NUM_CLASSES) and out.dtype == jnp.float32
  if name == "mlp":
    assert "batch_stats" not in variables and not state
  else:
    assert jax.tree.structure(state) == jax.tree.structure({"batch_stats": variables["batch_stats"]})


@pytest.mark.parametrize(
  "name", ["mlp", "small_cnn", "resnet20", "preact_resnet18", "resnet34", "cnn8", "imagenet_resnet50"]
)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  model, shape = _model(name, dtype=jnp.bfloat16), SHAPES[name]
  variables = jax.eval_shape(_init_fn(model, shape))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
  logits, _ = jax.eval_shape(functools.partial(model.apply, train=True, mutable=["batch_stats"]), variables, x)
  assert logits.dtype == jnp.float32


def test_bfloat16_forward_is_finite():
  model, shape = _model("small_cnn", dtype=jnp.bfloat16), SHAPES["small_cnn"]
  apply = jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  x = jax.random.normal(jax.random.key(3), (2,) + shape)
  logits, _ = apply(_variables("small_cnn"), x)
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()


# One concrete forward pass per architecture family (see _model for the
# two-stage stand-ins for preact_resnet18, resnet34 and imagenet_resnet50).
@pytest.mark.parametrize(
  "name", ["mlp", "small_cnn", "resnet20", "cnn8", "preact_2stage", "resnet_2stage", "imagenet_2stage"]
)
def test_forward(name):
  model, variables = _model(name), _variables(name)
  x = jax.random.normal(jax.random.key(1), (3,) + _shape(name))

  @jit  # One compilation per model: far cheaper on CPU than op-by-op dispatch.
  def forward(variables, x):
    train_out = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # The eval batch holds x and x reversed, to check examples are independent.
    return train_out, model.apply(variables, jnp.concatenate([x, x[::-1]]), train=False)

  (logits, state), eval_logits = forward(variables, x)
  assert logits.shape == (3, NUM_CLASSES) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  if name == "mlp":
    assert "batch_stats" not in variables and not state
  else:
    # Running statistics move away from their initial (0, 1) values.
    old, new = variables["batch_stats"], state["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))

  # The compiled forward agrees with Flax applied op by op, outside jit (each
  # operation dispatched and compiled on its own, no fusion), in both modes.
  want_eval = model.apply(variables, x, train=False)
  want_logits, want_state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

  # Eval mode is per-example (running statistics, not the batch's): reversing
  # the batch reverses the logits.
  assert eval_logits.dtype == jnp.float32 and np.isfinite(eval_logits).all()
  np.testing.assert_allclose(eval_logits[:3], want_eval, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(eval_logits[3:], eval_logits[2::-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(PARAM_COUNTS))
def test_param_counts(name):
  count = _count(_abstract_variables(name)["params"])
  assert count == pytest.approx(PARAM_COUNTS[name], rel=0.02), count


@pytest.mark.parametrize("name", models.names())
def test_classifier_is_the_top_level_head(name):
  """Fine-tuning finds the classifier by name: a top-level Dense 'head' giving the K logits."""
  params = _abstract_variables(name, shape=SHAPES[name], num_classes=NUM_CLASSES)["params"]
  assert "head" in params, sorted(params)
  assert set(params["head"]) == {"kernel", "bias"}
  assert params["head"]["kernel"].ndim == 2
  assert params["head"]["kernel"].shape[-1] == NUM_CLASSES
  assert params["head"]["bias"].shape == (NUM_CLASSES,)


@pytest.mark.parametrize("name", list(TORCHVISION_PARAM_COUNTS))
def test_imagenet_resnet_param_counts_match_torchvision(name):
  # Global pooling: the count does not depend on the input size, so 64x64 will do.
  variables = _abstract_variables(name, shape=(64, 64, 3), num_classes=1000)
  assert _count(variables["params"]) == TORCHVISION_PARAM_COUNTS[name]
  assert variables["params"]["head"]["kernel"].shape == (512 * (4 if name.endswith("50") else 1), 1000)


@pytest.mark.parametrize("name", list(TORCHVISION_PARAM_COUNTS))
@pytest.mark.parametrize("side", [64, 224])
def test_imagenet_resnet_feature_map_sizes(name, side):
  """Abstractly, the feature maps of He et al. 2016 Table 1 (224 -> 112, 56, 28, 14, 7)."""
  model = models.create(name, num_classes=1000, input_shape=(side, side, 3), axis_name=None)
  variables = jax.eval_shape(_init_fn(model, (side, side, 3)))
  x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
  logits, state = jax.eval_shape(
    functools.partial(model.apply, train=False, capture_intermediates=True, mutable=["intermediates"]), variables, x
  )
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  inter = state["intermediates"]
  assert inter["Conv_0"]["__call__"][0].shape == (2, side // 2, side // 2, 64)  # 7x7 conv, stride 2
  block = "Bottleneck" if name.endswith("50") else "BasicBlock"
  stage_sizes = (3, 4, 6, 3) if name.endswith("50") else (2, 2, 2, 2)
  width = 4 if name.endswith("50") else 1
  first = 0
  for stage, num_blocks in enumerate(stage_sizes):
    out = inter[f"{block}_{first}"]["__call__"][0]
    size = side // 2 ** (stage + 2)  # The max pool halves again before stage 1.
    assert out.shape == (2, size, size, 64 * 2**stage * width), (stage, out.shape)
    if name.endswith("50"):
      # torchvision v1.5: the first 1x1 conv keeps the resolution, the 3x3 conv strides.
      convs = [inter[f"{block}_{first}"][f"Conv_{i}"]["__call__"][0].shape[1] for i in range(3)]
      assert convs == [2 * size if stage else size, size, size]
    first += num_blocks


def test_torchvision_padding():
  """A 3x3 stride-2 conv of the ImageNet stem pads (1, 1) like PyTorch, not (0, 1) like 'SAME'."""
  padded_conv = models._torch_padded_conv(use_bias=False, kernel_init=nn.initializers.ones)
  conv = padded_conv(1, (3, 3), (2, 2))
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = conv.apply(conv.init(jax.random.key(0), x), x)[0, :, :, 0]
  # Reference: zero-pad one pixel on every side, then sum each 3x3 window at stride 2.
  padded = np.pad(np.arange(16.0).reshape(4, 4), 1)
  want = [[padded[i : i + 3, j : j + 3].sum() for j in (0, 2)] for i in (0, 2)]
  np.testing.assert_allclose(y, want)


def test_resnet_stem_defaults_to_cifar():
  """stem='cifar' is the default and keeps the 3x3 stride-1 stem; an unknown stem is refused."""
  assert models.ResNet(10, (1,), models.BasicBlock).stem == "cifar"
  params = _abstract_variables("resnet34")["params"]
  assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 64)
  imagenet = _abstract_variables("imagenet_resnet18")["params"]
  assert imagenet["Conv_0"]["kernel"].shape == (7, 7, 3, 64)
  model = models.ResNet(10, (1,), models.BasicBlock, stem="imagnet")
  with pytest.raises(ValueError, match="stem"):
    jax.eval_shape(_init_fn(model, (8, 8, 3)))


def test_cifar_resnet_uses_option_a_shortcuts():
  # Option A shortcuts are parameter-free: every conv in ResNet-20 is 3x3.
  params = _abstract_variables("resnet20")["params"]
  kernels = [
    x.shape
    for path, x in jax.tree_util.tree_leaves_with_path(params)
    if "Conv" in jax.tree_util.keystr(path) and x.ndim == 4
  ]
  assert len(kernels) == 19 and all(k[:2] == (3, 3) for k in kernels)


def test_cnn8_matches_apl_reference():
  # 6 convs (64, 64, 128, 128, 196, 196), 4x4x196 = 3136 features into Dense 256.
  params = _abstract_variables("cnn8")["params"]
  convs = [params[f"Conv_{i}"]["kernel"].shape[-1] for i in range(6)]
  assert convs == [64, 64, 128, 128, 196, 196]
  assert params["Dense_0"]["kernel"].shape == (3136, 256)
  assert params["head"]["kernel"].shape == (256, 10)


def test_batch_norm_under_shard_map_matches_global_batch():
  """BN over axis 'batch' on 4 shards == BN without a collective on the whole batch."""
  shape, num_devices = (8, 8, 1), 4
  mesh = jax.make_mesh(
    (num_devices,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:num_devices]
  )
  sharded = _model("small_cnn", axis_name="batch")
  single = _model("small_cnn", axis_name=None)
  variables = _variables("small_cnn")  # small_cnn's params do not depend on H, W.
  x = jax.random.normal(jax.random.key(2), (8,) + shape) * 2.0 + 0.5

  def step(model, variables, x):
    return model.apply(variables, x, train=True, mutable=["batch_stats"])

  sharded_step = jit(
    jax.shard_map(functools.partial(step, sharded), mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P("batch"), P()))
  )
  logits, state = sharded_step(variables, x)
  want_logits, want_state = jit(functools.partial(step, single))(variables, x)

  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Each shard alone would normalise with its own statistics and differ.
  local_logits, _ = jit(functools.partial(step, single))(variables, x[:2])
  assert not np.allclose(local_logits, want_logits[:2], rtol=1e-3, atol=1e-3)


def test_create_unknown_name_lists_models():
  with pytest.raises(ValueError) as e:
    models.create("nope", num_classes=10, input_shape=(32, 32, 3))
  assert "nope" in str(e.value)
  assert all(name in str(e.value) for name in models.names())


def test_create_rejects_too_small_inputs():
  with pytest.raises(ValueError, match=r"at least 8x8.*\(4, 4, 3\)"):
    models.create("cnn8", num_classes=10, input_shape=(4, 4, 3))
  with pytest.raises(ValueError, match=r"at least 4x4"):
    models.create("resnet20", num_classes=10, input_shape=(2, 2, 3))
  for name in TORCHVISION_PARAM_COUNTS:  # Downsampled by 32: a 1x1 map at 32x32, nothing below.
    with pytest.raises(ValueError, match=r"at least 32x32.*\(31, 64, 3\)"):
      models.create(name, num_classes=10, input_shape=(31, 64, 3))
    models.create(name, num_classes=10, input_shape=(32, 32, 3))
  with pytest.raises(ValueError, match="input_shape"):
    models.create("mlp", num_classes=10, input_shape=(8, 8))
  # The small models accept the smallest dataset, 8x8 digits.
  models.create("small_cnn", num_classes=10, input_shape=(8, 8, 1))


@pytest.mark.parametrize(
  "shape, name",
  [
    ((8, 8, 1), "small_cnn"),
    ((28, 28, 1), "small_cnn"),
    ((32, 32, 3), "resnet20"),
    ((64, 64, 3), "resnet20"),
  ],
)
def test_default_for(shape, name):
  assert models.default_for(shape) == name
