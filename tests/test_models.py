"""Tests for experiments/models.py: shapes, parameter counts, BatchNorm under shard_map."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments import models

# Small inputs keep the suite fast; each is at least the model's MIN_SIZE.
FORWARD_SHAPES = {
    'mlp': (8, 8, 1),
    'small_cnn': (16, 16, 1),  # >= 16, so the max-pool branch runs too.
    'resnet20': (8, 8, 3),
    'resnet32': (8, 8, 3),
    'resnet44': (8, 8, 3),
    'resnet56': (8, 8, 3),
    'preact_resnet18': (8, 8, 3),
    'resnet34': (8, 8, 3),
    'cnn8': (8, 8, 3),
}

# Published sizes for 10 classes and 32x32x3 inputs: He et al. 2016 Table 6
# for the CIFAR ResNets; the usual counts of the PyTorch reference code for
# PreAct ResNet-18 (DivideMix) and ResNet-34 (kuangliu / GCE).
PARAM_COUNTS = {
    'resnet20': 0.27e6,
    'resnet32': 0.46e6,
    'resnet44': 0.66e6,
    'resnet56': 0.85e6,
    'preact_resnet18': 11.17e6,
    'resnet34': 21.28e6,
}


def _init(model, shape, batch=1):
  return model.init(jax.random.key(0), jnp.zeros((batch,) + shape), train=False)


def _abstract_variables(name, shape=(32, 32, 3), num_classes=10):
  """Variable shapes without allocating or computing anything."""
  model = models.create(name, num_classes=num_classes, input_shape=shape, axis_name=None)
  return jax.eval_shape(functools.partial(_init, model, shape))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_names_match_registry():
  assert models.names() == list(models.MODELS)
  assert set(FORWARD_SHAPES) == set(models.names())


@pytest.mark.parametrize('name', list(FORWARD_SHAPES))
def test_forward(name):
  shape, num_classes = FORWARD_SHAPES[name], 7
  model = models.create(name, num_classes=num_classes, input_shape=shape, axis_name=None)
  x = jax.random.normal(jax.random.key(1), (3,) + shape)
  variables = _init(model, shape)

  logits, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (3, num_classes) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  if name == 'mlp':
    assert 'batch_stats' not in variables and not state
  else:
    # Running statistics move away from their initial (0, 1) values.
    old, new = variables['batch_stats'], state['batch_stats']
    assert jax.tree.structure(old) == jax.tree.structure(new)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))

  # Eval mode is deterministic and per-example (no batch statistics used).
  eval_logits = model.apply(variables, x, train=False)
  assert eval_logits.dtype == jnp.float32 and np.isfinite(eval_logits).all()
  np.testing.assert_array_equal(eval_logits, model.apply(variables, x, train=False))
  np.testing.assert_allclose(model.apply(variables, x[:1], train=False), eval_logits[:1],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(PARAM_COUNTS))
def test_param_counts(name):
  count = _count(_abstract_variables(name)['params'])
  assert count == pytest.approx(PARAM_COUNTS[name], rel=0.02), count


def test_cifar_resnet_uses_option_a_shortcuts():
  # Option A shortcuts are parameter-free: every conv in ResNet-20 is 3x3.
  params = _abstract_variables('resnet20')['params']
  kernels = [x.shape for path, x in jax.tree_util.tree_leaves_with_path(params)
             if 'Conv' in jax.tree_util.keystr(path) and x.ndim == 4]
  assert len(kernels) == 19 and all(k[:2] == (3, 3) for k in kernels)


def test_cnn8_matches_apl_reference():
  # 6 convs (64, 64, 128, 128, 196, 196), 4x4x196 = 3136 features into Dense 256.
  params = _abstract_variables('cnn8')['params']
  convs = [params[f'Conv_{i}']['kernel'].shape[-1] for i in range(6)]
  assert convs == [64, 64, 128, 128, 196, 196]
  assert params['Dense_0']['kernel'].shape == (3136, 256)
  assert params['Dense_1']['kernel'].shape == (256, 10)


def test_batch_norm_under_shard_map_matches_global_batch():
  shape, num_devices = (16, 16, 1), 4
  mesh = jax.make_mesh((num_devices,), ('batch',),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num_devices])
  sharded = models.create('small_cnn', num_classes=5, input_shape=shape, axis_name='batch')
  single = models.create('small_cnn', num_classes=5, input_shape=shape, axis_name=None)
  variables = _init(single, shape)
  x = jax.random.normal(jax.random.key(2), (8,) + shape) * 2.0 + 0.5

  def step(model, variables, x):
    return model.apply(variables, x, train=True, mutable=['batch_stats'])

  sharded_step = jax.jit(jax.shard_map(
      functools.partial(step, sharded), mesh=mesh,
      in_specs=(P(), P('batch')), out_specs=(P('batch'), P())))
  logits, state = sharded_step(variables, x)
  want_logits, want_state = jax.jit(functools.partial(step, single))(variables, x)

  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', ['small_cnn', 'resnet20'])
def test_bfloat16_compute_gives_float32_logits(name):
  shape = FORWARD_SHAPES[name]
  model = models.create(name, num_classes=3, input_shape=shape, axis_name=None,
                        dtype=jnp.bfloat16)
  variables = _init(model, shape)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  logits, _ = model.apply(variables, jnp.ones((2,) + shape), train=True,
                          mutable=['batch_stats'])
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()


def test_create_unknown_name_lists_models():
  with pytest.raises(ValueError) as e:
    models.create('nope', num_classes=10, input_shape=(32, 32, 3))
  assert 'nope' in str(e.value)
  assert all(name in str(e.value) for name in models.names())


def test_create_rejects_too_small_inputs():
  with pytest.raises(ValueError, match=r'at least 8x8.*\(4, 4, 3\)'):
    models.create('cnn8', num_classes=10, input_shape=(4, 4, 3))
  with pytest.raises(ValueError, match=r'at least 4x4'):
    models.create('resnet20', num_classes=10, input_shape=(2, 2, 3))
  with pytest.raises(ValueError, match='input_shape'):
    models.create('mlp', num_classes=10, input_shape=(8, 8))
  # The small models accept the smallest dataset, 8x8 digits.
  models.create('small_cnn', num_classes=10, input_shape=(8, 8, 1))


@pytest.mark.parametrize('shape, name', [
    ((8, 8, 1), 'small_cnn'),
    ((28, 28, 1), 'small_cnn'),
    ((32, 32, 3), 'resnet20'),
    ((64, 64, 3), 'resnet20'),
])
def test_default_for(shape, name):
  assert models.default_for(shape) == name
