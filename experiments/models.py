"""Classifiers for the noisy-label experiments, in Flax linen.

Every model maps a normalised image batch ``x`` of shape ``[B, H, W, C]`` to
float32 logits ``[B, num_classes]`` and is called as ``model.apply(variables,
x, train=train)``.

Models with BatchNorm keep running statistics in the ``batch_stats``
collection: pass ``mutable=['batch_stats']`` when ``train=True``. Their
``axis_name`` (default ``'batch'``) names the data-parallel axis that batch
statistics are averaged over when the model runs inside ``jax.shard_map``, so
that a sharded step normalises exactly like one device seeing the whole
global batch. Use ``axis_name=None`` outside ``shard_map``. Initialise with
``train=False`` (Flax also skips the collective while initialising).

``dtype`` is the computation dtype (e.g. ``jnp.bfloat16``); parameters stay
float32 and the logits are always cast back to float32.

In every model the classifier is the top-level module named ``head`` (a
``nn.Dense`` giving the logits), so fine-tuning code can find it and
re-initialise it, e.g. for another number of classes; the other layers keep
Flax's automatic names (``Conv_0``, ``Dense_0``, ...).

Architectures:

* ``mlp``: two hidden ReLU layers, a baseline for tiny inputs.
* ``small_cnn``: a cheap 3-conv network for sklearn digits (8x8) and
  (Fashion-)MNIST (28x28).
* ``resnet20/32/44/56``: the CIFAR ResNets of He et al., "Deep Residual
  Learning for Image Recognition", CVPR 2016, Sec. 4.2 (option A shortcuts).
* ``preact_resnet18``: PreAct ResNet-18 (He et al., "Identity Mappings in Deep
  Residual Networks", ECCV 2016) with the CIFAR stem of the DivideMix code
  (Li et al., ICLR 2020).
* ``resnet34``: ResNet-34 with a CIFAR stem and projection shortcuts, as in the
  reference code of GCE (Zhang & Sabuncu, NeurIPS 2018), which follows
  kuangliu/pytorch-cifar.
* ``cnn8``: the 8-layer CNN used for CIFAR-10 by Ma et al., "Normalized Loss
  Functions for Deep Learning with Noisy Labels", ICML 2020 (APL).
* ``imagenet_resnet18/50``: the ImageNet ResNets of He et al., CVPR 2016,
  Table 1 (7x7 stem and max pool; ResNet-50 with bottleneck blocks), laid out
  as torchvision's ``resnet18`` / ``resnet50`` (v1.5: the stride of a
  bottleneck is in its 3x3 conv) with the same parameter counts, for
  larger-image data sets such as Clothing1M, WebVision and Food-101N.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# He et al. (2015) initialisation for ReLU networks, fan-out normal as in the
# original ResNet code (and torchvision).
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_norm(train: bool, axis_name: str | None, dtype) -> ModuleDef:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there == 0.9 here)."""
  return functools.partial(
    nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, axis_name=axis_name
  )


def _torch_padded_conv(**defaults) -> ModuleDef:
  """``nn.Conv`` padded by (k - 1) // 2 on each side, as torchvision's convs.

  On an even input Flax's 'SAME' pads a stride-2 conv asymmetrically, (0, 1)
  for 3x3 and (2, 3) for 7x7, where torchvision pads (1, 1) and (3, 3): the
  output sizes agree but the sampling grid is shifted by a pixel, so weights
  ported from torchvision would see slightly different features. 1x1 convs
  get no padding either way.
  """

  def conv(features, kernel_size, strides=(1, 1), **kwargs):
    padding = [((k - 1) // 2, (k - 1) // 2) for k in kernel_size]
    return nn.Conv(features, kernel_size, strides, padding=padding, **defaults, **kwargs)

  return conv


def _logits(x) -> jnp.ndarray:
  # Losses and metrics are computed in float32 whatever the compute dtype.
  return jnp.asarray(x, jnp.float32)


class MLP(nn.Module):
  """Flatten, ``len(hidden)`` Dense+ReLU layers, then a linear classifier."""

  num_classes: int
  hidden: Sequence[int] = (256, 256)
  axis_name: str | None = None  # Unused (no BatchNorm); kept for a uniform API.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    del train  # No dropout or BatchNorm.
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return _logits(nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x))


class SmallCNN(nn.Module):
  """conv32-conv64-[maxpool]-conv128 (3x3, BN, ReLU), global avg pool, Dense.

  The 2x2 max pool is applied only when both spatial sides are >= 16, so the
  same network serves 8x8 digits (no pooling) and 28x28 MNIST (pooled to 14x14).
  """

  num_classes: int
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), use_bias=False, kernel_init=kaiming_normal, dtype=self.dtype)
    norm = _batch_norm(train, self.axis_name, self.dtype)
    pool = min(x.shape[1], x.shape[2]) >= 16
    for i, features in enumerate((32, 64, 128)):
      x = nn.relu(norm()(conv(features)(x)))
      if i == 1 and pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return _logits(nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x))


class CifarBasicBlock(nn.Module):
  """Basic block with the parameter-free shortcut "option A" of He et al. 2016.

  When the block halves the resolution and doubles the width, the shortcut
  subsamples with stride 2 and pads the new channels with zeros (Sec. 4.2),
  which is what keeps ResNet-20 at 0.27M parameters.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm()(y)
    residual = x[:, :: self.strides, :: self.strides, :]
    extra = self.filters - x.shape[-1]
    if extra:
      residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (0, extra)))
    return nn.relu(y + residual)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for CIFAR, He et al. 2016, Sec. 4.2.

  A 3x3 conv with 16 filters, then three stages of n basic blocks with 16, 32
  and 64 filters (the first block of stages 2 and 3 has stride 2), global
  average pooling and a Dense classifier.
  """

  num_classes: int
  depth: int = 20
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}.")
    n = (self.depth - 2) // 6
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=kaiming_normal, dtype=self.dtype)
    norm = _batch_norm(train, self.axis_name, self.dtype)
    x = nn.relu(norm()(conv(16, (3, 3))(x)))
    for stage, filters in enumerate((16, 32, 64)):
      for block in range(n):
        strides = 2 if stage > 0 and block == 0 else 1
        x = CifarBasicBlock(filters, conv=conv, norm=norm, strides=strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    return _logits(nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x))


class BasicBlock(nn.Module):
  """Post-activation basic block with a 1x1 conv + BN projection shortcut."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    strides = (self.strides, self.strides)
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), strides)(x)))
    y = self.norm()(self.conv(self.filters, (3, 3))(y))
    residual = x
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), strides, name="proj_conv")(x)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """Bottleneck block of He et al., CVPR 2016, Sec. 4.1 (ResNet-50/101/152).

  1x1 conv to ``filters``, 3x3 conv, 1x1 conv to ``4 * filters``, each with
  BN (ReLU after the first two and after the sum). As in torchvision ("ResNet
  v1.5") the stride is in the 3x3 conv, not the first 1x1 as in the paper,
  which then skips three quarters of its input. The shortcut is a 1x1 conv +
  BN projection when the shape changes (option B), else the identity. The last
  BN's scale starts at one: torchvision's default ``zero_init_residual=False``.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  expansion = 4  # Output width / ``filters``; a class constant, not a field.

  @nn.compact
  def __call__(self, x):
    strides = (self.strides, self.strides)
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), strides)(y)))
    y = self.norm()(self.conv(self.filters * self.expansion, (1, 1))(y))
    residual = x
    if residual.shape != y.shape:
      residual = self.conv(self.filters * self.expansion, (1, 1), strides, name="proj_conv")(x)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(y + residual)


class PreActBlock(nn.Module):
  """Pre-activation basic block, He et al., ECCV 2016: BN-ReLU-conv twice.

  As in the reference code, the projection shortcut (a 1x1 conv without BN)
  takes the pre-activated input.
  """

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    strides = (self.strides, self.strides)
    y = nn.relu(self.norm()(x))
    residual = x
    if self.strides != 1 or x.shape[-1] != self.filters:
      residual = self.conv(self.filters, (1, 1), strides, name="proj_conv")(y)
    y = self.conv(self.filters, (3, 3), strides)(y)
    y = self.conv(self.filters, (3, 3))(nn.relu(self.norm()(y)))
    return y + residual


class ResNet(nn.Module):
  """Four-stage ResNet with a CIFAR or an ImageNet stem.

  Four stages of 64, 128, 256 and 512 filters (times the block's expansion;
  stride 2 at stages 2-4), global average pooling and a Dense classifier.

  ``stem='cifar'``: 3x3 conv 64, stride 1, BN, ReLU, no max pool (total
  downsampling 8). With ``PreActBlock`` this is the DivideMix ``ResNet18``,
  which (unlike the ECCV 2016 paper) has no final BN-ReLU before pooling.

  ``stem='imagenet'``: He et al., CVPR 2016, Table 1: 7x7 conv 64, stride 2,
  BN, ReLU, 3x3 max pool, stride 2 (total downsampling 32). Every conv is
  padded as in torchvision (see ``_torch_padded_conv``).
  """

  num_classes: int
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  axis_name: str | None = None
  dtype: Any = jnp.float32
  stem: str = "cifar"  # 'cifar' | 'imagenet'

  @nn.compact
  def __call__(self, x, train: bool):
    norm = _batch_norm(train, self.axis_name, self.dtype)
    if self.stem == "cifar":
      conv = functools.partial(nn.Conv, use_bias=False, kernel_init=kaiming_normal, dtype=self.dtype)
      x = nn.relu(norm()(conv(64, (3, 3))(x)))
    elif self.stem == "imagenet":
      conv = _torch_padded_conv(use_bias=False, kernel_init=kaiming_normal, dtype=self.dtype)
      x = nn.relu(norm()(conv(64, (7, 7), (2, 2))(x)))
      # Flax pads a max pool with -inf, like PyTorch's MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"ResNet stem must be 'cifar' or 'imagenet', got {self.stem!r}.")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = self.block_cls(64 * 2**stage, conv=conv, norm=norm, strides=strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    return _logits(nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x))


class CNN8(nn.Module):
  """The 8-layer CIFAR-10 CNN of Ma et al., ICML 2020 (APL).

  Three blocks of [3x3 conv, BN, ReLU] x 2 + 2x2 max pool with 64, 128 and 196
  filters, then Dense 256 + BN + ReLU and a Dense classifier: 6 conv + 2 dense
  layers. Follows ``ToyModel('CIFAR10')`` in HanxunH/Active-Passive-Losses
  ``models.py``: the convs keep their bias, convs use Kaiming-uniform (fan-in)
  and Dense layers Xavier-uniform init, and the 4x4x196 map is flattened (no
  global pooling), so the parameter count depends on the input size.
  """

  num_classes: int
  axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(
      nn.Conv,
      kernel_size=(3, 3),
      dtype=self.dtype,
      kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
    )
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform())
    norm = _batch_norm(train, self.axis_name, self.dtype)
    for features in (64, 128, 196):
      for _ in range(2):
        x = nn.relu(norm()(conv(features)(x)))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(norm()(dense(256)(x)))
    return _logits(dense(self.num_classes, name="head")(x))


MODELS: dict[str, Callable[..., nn.Module]] = {
  "mlp": MLP,
  "small_cnn": SmallCNN,
  "resnet20": functools.partial(CifarResNet, depth=20),
  "resnet32": functools.partial(CifarResNet, depth=32),
  "resnet44": functools.partial(CifarResNet, depth=44),
  "resnet56": functools.partial(CifarResNet, depth=56),
  "preact_resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=PreActBlock),
  "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
  "cnn8": CNN8,
  "imagenet_resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, stem="imagenet"),
  "imagenet_resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck, stem="imagenet"),
}

# Smallest spatial side each model accepts: its total downsampling factor, so
# that every stage still sees at least one real (non-padding) pixel. cnn8 also
# needs it because its VALID max pools would otherwise shrink the map to 0.
MIN_SIZE: dict[str, int] = {
  "mlp": 1,
  "small_cnn": 1,
  "resnet20": 4,
  "resnet32": 4,
  "resnet44": 4,
  "resnet56": 4,
  "preact_resnet18": 8,
  "resnet34": 8,
  "cnn8": 8,
  # Stem /4 (stride-2 conv and max pool), then stages 2-4 /8.
  "imagenet_resnet18": 32,
  "imagenet_resnet50": 32,
}


def names() -> list[str]:
  """Names accepted by ``create``, in registry order."""
  return list(MODELS)


def create(
  name: str, *, num_classes: int, input_shape: tuple[int, int, int], axis_name: str | None = "batch", dtype=jnp.float32
) -> nn.Module:
  """Builds model ``name`` for ``[H, W, C]`` inputs and ``num_classes`` classes.

  Raises:
    ValueError: for an unknown name, a malformed ``input_shape``, or an input
      smaller than the model's ``MIN_SIZE``.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {names()}.")
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(f"input_shape must be (H, W, C) with positive sides, got {tuple(input_shape)}.")
  if num_classes < 1:
    raise ValueError(f"num_classes must be positive, got {num_classes}.")
  height, width, _ = input_shape
  minimum = MIN_SIZE[name]
  if min(height, width) < minimum:
    raise ValueError(
      f"Model {name!r} needs inputs of at least {minimum}x{minimum}, got input_shape {tuple(input_shape)}."
    )
  return MODELS[name](num_classes=num_classes, axis_name=axis_name, dtype=dtype)


def default_for(input_shape: tuple[int, int, int]) -> str:
  """The model picked when ``config.model == 'auto'``.

  Rule: inputs with both sides >= 32 (CIFAR-sized and larger, any number of
  channels) get ``'resnet20'``; anything smaller (8x8 digits, 28x28 MNIST and
  Fashion-MNIST) gets the cheap ``'small_cnn'``.
  """
  height, width, _ = input_shape
  return "resnet20" if min(height, width) >= 32 else "small_cnn"
