"""Dynamic clipping in data-parallel training: under `jax.shard_map` over 4 devices, with `axis_name`, the
clipping threshold is computed over the GLOBAL batch, so every example gets the loss it would get on one
device holding the whole batch.

The 4 devices are simulated CPU devices (the flag below must be set before JAX is imported). Run:
  python examples/dynamic_clipping_shard_map.py
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import robust_losses as rl  # noqa: E402

NUM_DEVICES, BATCH, NUM_CLASSES, NOISE_RATE = 4, 256, 10, 0.3
# Epochs completed, which a training loop passes as `epoch`: past the clipping losses' default 5-epoch warm-up
# (before it the loss is unclipped; a loop that passes no epoch sets warmup_epochs=0 to clip from the start).
EPOCH = 5

# A batch as a half-trained model sees it: confident logits for the true class, and 30% of the labels
# flipped to another class, so their losses form a separate high-loss mode for the clipping statistic.
rng = np.random.default_rng(0)
true_class = rng.integers(0, NUM_CLASSES, BATCH)
logits = (4.0 * np.eye(NUM_CLASSES)[true_class] + rng.normal(size=(BATCH, NUM_CLASSES))).astype(np.float32)
labels = true_class.copy()
flipped = rng.random(BATCH) < NOISE_RATE
labels[flipped] = (labels[flipped] + rng.integers(1, NUM_CLASSES, flipped.sum())) % NUM_CLASSES

mesh = jax.make_mesh((NUM_DEVICES,), ("batch",))
# Each device holds a quarter of the batch, as a data-parallel input pipeline delivers it.
sharded_logits, sharded_labels = jax.device_put((logits, labels), NamedSharding(mesh, P("batch")))
print(f"{len(jax.devices())} devices; batch {BATCH} split into {NUM_DEVICES} shards of {BATCH // NUM_DEVICES}")

# The default mixture statistic, and two simpler ones set to clip about as much as the noise rate.
for statistic, hparams in (("gmm", {}), ("quantile", {"quantile": 0.7}), ("mean_std", {"num_std": 0.5})):
  loss_fn = rl.get("clipped_cross_entropy", statistic=statistic, **hparams)
  # One device, whole batch.
  one_losses, one_aux = jax.jit(lambda z, y: loss_fn.call_with_aux(z, y, epoch=EPOCH))(logits, labels)
  # Four devices, a quarter of the batch each; axis_name makes the threshold global.
  per_device = jax.shard_map(
    lambda z, y: loss_fn.call_with_aux(z, y, axis_name="batch", epoch=EPOCH),
    mesh=mesh,
    in_specs=(P("batch"), P("batch")),
    out_specs=P("batch"),
  )
  four_losses, four_aux = jax.jit(per_device)(sharded_logits, sharded_labels)

  one_losses, four_losses = np.asarray(one_losses), np.asarray(four_losses)
  difference = float(np.max(np.abs(one_losses - four_losses)))
  # The threshold is a float32 function of batch sums (mean, variance, mixture moments) that the sharded
  # program adds up in another order (per shard, then psum): each sum of BATCH terms is within
  # BATCH * eps * max|loss| of the exact one, and tau = mean + num_std * std mixes (1 + num_std) of them.
  # A loss is min(L, tau) (1-Lipschitz in tau), so it moves by at most as much as tau.
  eps = float(np.finfo(np.float32).eps)
  tolerance = 2 * BATCH * eps * float(np.max(one_aux["unclipped"])) * (1 + loss_fn.hparams["num_std"])
  print(
    f"{statistic:>9}: clipped {float(np.mean(one_aux['clipped'])):.1%} (1 device) "
    f"{float(np.mean(four_aux['clipped'])):.1%} ({NUM_DEVICES} devices) | "
    f"mean loss {one_losses.mean():.6f} (1 device) {four_losses.mean():.6f} ({NUM_DEVICES} devices) | "
    f"max |difference| {difference:.2e} <= tolerance {tolerance:.2e}"
  )
  assert difference <= tolerance, (statistic, difference, tolerance)

print(f"the same losses on 1 and {NUM_DEVICES} devices")
