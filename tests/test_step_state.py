"""Loss state across steps in the trainer (robust_losses.protocol.StepState): OGC's threshold schedule and
windowed clipping keep a fixed-size state updated from the global batch, checkpointed, and identical on 1 and
4 devices (digits, 4 simulated CPU devices from conftest)."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import robust_losses as rl
from experiments import rng, train, train_lib
from experiments.data.statistics import MIN_STD
from experiments.mesh import replicate
from tests.test_train import assert_same_run, build, data, history, tiny

# Small enough that the state acts within a 3-epoch digits run (19 steps of 64 per epoch): OGC's queue is full
# after 4 steps and refits every 4; the window holds 4 batches and the quantile statistic clips every step
# (from the first step: no warm-up).
LOSSES = {
  "optimized_gradient_clipping": {"loss.queue_size": 256, "loss.refit_every": 4, "grad_clip_norm": 5.0},
  "clipped_cross_entropy": {"loss.window_size": 256, "loss.statistic": "quantile", "loss.warmup_epochs": 0},
}


def test_step_state_declared_through_the_registry():
  ogc = rl.get("optimized_gradient_clipping")
  assert ogc.uses_step_state and ogc.uses_learning_rate
  state = ogc.init_step_state(10)
  assert state.queue.losses.shape == (4096,)  # the official queue by default
  assert not rl.get("optimized_gradient_clipping", queue_size=0).uses_step_state  # a fixed threshold
  assert not rl.get("clipped_cross_entropy").uses_step_state  # the paper's per-batch statistic
  window = rl.get("clipped_cross_entropy", window_size=32, per_class=True).init_step_state(10)
  assert window.losses.shape == (10, 32)
  with pytest.raises(ValueError, match="keeps no step state"):
    rl.get("softmax_cross_entropy")(np.zeros((2, 3)), np.array([0, 1]), step_state={})
  with pytest.raises(ValueError, match="needs learning_rate"):
    ogc(np.zeros((2, 3)), np.array([0, 1]), step_state=state)


U = 2.0**-24  # float32 unit roundoff


def gamma(n):
  """Higham's gamma_n = n u / (1 - n u): a float32 sum of n + 1 terms, in any order, is within gamma_n times the
  sum of their magnitudes of the exact sum (a dot product of length n: gamma_n |x|.|y|)."""
  return n * U / (1 - n * U)


def mlp_error_bound(params, images, mean, std):
  """(logits, e): the digits MLP's logits on one global batch in float64 and a componentwise bound e on how far
  a float32 evaluation that sums every dot product in any order can be from them.

  Input: normalize's three roundings, gamma_3 (1 + |mean|) / std. Dense layer h -> W^T h + b (d inputs, one
  sum of d + 1 terms): the incoming error goes through |W| (ReLU is 1-Lipschitz) and the layer adds
  gamma_{d+1} (|W|^T (|h| + e) + |b|). First order in u; the float64 reference's own rounding is 2^-29 of that.
  """
  x = images.reshape(len(images), -1).astype(np.float64) / 255
  mean, std = np.float64(np.float32(mean[0])), np.float64(max(np.float32(std[0]), np.float32(MIN_STD)))
  h, e = (x - mean) / std, np.full(x.shape, gamma(3) * (1 + abs(mean)) / std)
  for name in ("Dense_0", "Dense_1", "head"):
    w, b = (np.asarray(params[name][k][0], np.float64) for k in ("kernel", "bias"))
    e = e @ np.abs(w) + gamma(w.shape[0] + 1) * ((np.abs(h) + e) @ np.abs(w) + np.abs(b))
    h = h @ w + b if name == "head" else np.maximum(h @ w + b, 0.0)
  return h, e


def _steps_from_one_state(loss, steps):
  """Each of the first `steps` steps run on 1 and on 4 devices from the same state (the 1-device run's) and
  the same global batch: yields (1-device state before, its batch, (state, metrics) after on 1, on 4)."""
  ds = data.load(tiny().data)
  progs = [build(tiny(num_devices=n, **{"loss.name": loss}, **LOSSES[loss]), ds) for n in (1, 4)]
  # The bound below reads the batch's images unaugmented and assumes float32 arithmetic.
  assert not progs[0].crop_pad and not progs[0].flip and progs[0].compute_dtype == jnp.float32
  runs = []
  for prog in progs:
    keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(rng.replica_keys([0]))))
    labels = replicate(prog.mesh, ds.train.labels[None])
    feed = data.train_feed(ds, prog.mesh, keys, [0], prog.batch_size, prog.steps_per_epoch, None)
    feed.start_epoch(0)
    runs.append((prog, keys, labels, feed))
  state = jax.tree.map(np.asarray, train_lib.init_state(progs[0], rng.replica_keys([0]), ds.image_shape))
  for t in range(steps):
    after, ids = [], []
    for prog, keys, labels, feed in runs:
      batch = feed.next(1)
      ids.append(np.asarray(batch["ids"])[0, 0])
      new, m = train_lib.train_chunk_fn(prog)(
        jax.device_put(state, NamedSharding(prog.mesh, P())),  # a copy: the step donates its state
        keys,
        labels,
        jnp.zeros_like(labels, bool),
        batch,
        jnp.array([t], jnp.int32),
      )
      after.append(jax.tree.map(np.asarray, (new, m)))
    np.testing.assert_array_equal(ids[0], ids[1])  # the same global batch
    yield state, (np.asarray(batch["images"])[0, 0], ds.train.labels[ids[0]], progs[0]), after[0], after[1]
    state = after[0][0]


@pytest.mark.parametrize("loss", list(LOSSES))
def test_first_steps_on_one_device_equal_four_to_reduction_order(loss):
  # Each step from the same state and global batch of B = 64: the 1-device and the 4-device program differ
  # only in how XLA orders float32 sums (u = 2^-24, gamma_n = n u / (1 - n u)).
  # (1) The forward pass: the matmuls have 64 or 16 rows, and XLA:CPU may sum each example's dot products
  # over d = 64, 256, 256 features in another order for each (it does: the CE values differ by ulps). Each
  # program's logits are within e of the exact ones (mlp_error_bound: gamma_{d+1} per layer). The per-example
  # CE = logsumexp(z) - z_y is 2-Lipschitz in max|dz| (its gradient p - e_y has l1 norm <= 2), and its own
  # evaluation (K = 10 exps summed, a log, a few subtractions; exp and log within 2 ulps) adds at most
  # r = gamma_{K+8} (2 + spread(z) + |logsumexp(z)| + CE + |log t|), which also covers OGC's clamp and its
  # branch below the threshold t (tau p_y <= 1 there, continuous at p_y = t). So the two programs' CE of an
  # example differ by at most bound = 2 (2 max_k e + r).
  # (2) The batch sums: the loss is the mean of 64 non-negative per-example losses l_i, summed in one or in
  # 4 + 1 parts (the divisions are by powers of two: exact), each within gamma_63 sum(l_i) / 64 of exact.
  # The state then holds the global batch's CE values in global order, each within `bound` (a per-device
  # window would hold 16 losses, other examples', and count 16 per step); its older entries are copies and
  # its counts and positions integers: equal exactly.
  # What has no bound: OGC's refit (every 4 steps) runs the exact 2-means split (an argmax over cuts), 10 EM
  # iterations and a bisection (comparisons) on the queue, none Lipschitz in it, so a rounding of the queue
  # can move its means, variances, weights and threshold arbitrarily. On refit steps only its input, the
  # queue, is compared (and the loss, which uses the new threshold, is not); on other steps the fit is the
  # state's copy: equal exactly.
  for t, (before, (images, y, prog), (state1, m1), (state4, m4)) in enumerate(_steps_from_one_state(loss, 8)):
    z, e = mlp_error_bound(before.params, images, prog.mean, prog.std)
    lse = np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1)) + z.max(1)
    ce = lse - z[np.arange(len(y)), y]
    log_t = np.log(before.step_state.threshold[0]) if loss == "optimized_gradient_clipping" else 0.0
    r = gamma(z.shape[1] + 8) * (2 + np.ptp(z, 1) + np.abs(lse) + ce + abs(log_t))
    bound = 2 * (2 * e.max(1) + r)
    ogc = loss == "optimized_gradient_clipping"
    window, window1, window4 = (s.step_state.queue if ogc else s.step_state for s in (before, state1, state4))
    slot_bound = np.zeros(window.size)  # 0: an older entry, copied
    slot_bound[(window.position[0] + np.arange(len(y))) % window.size] = bound
    diff = np.abs(window1.losses[0] - window4.losses[0])
    assert (diff <= slot_bound).all(), f"step {t}: {np.max(diff - slot_bound)} over the bound"
    for a, b in zip(jax.tree.leaves(state1.step_state), jax.tree.leaves(state4.step_state)):
      if np.issubdtype(a.dtype, np.integer):
        np.testing.assert_array_equal(a, b)  # counts, positions, steps: exactly
    # The loss: each example's within `bound` for a common threshold. Clipped CE's threshold, the quantile
    # a + f (b - a) of the window (f from the count: equal), moves by at most the largest entry bound (order
    # statistics are 1-Lipschitz in the max norm) plus each program's 3 roundings, gamma_3 (2|a| + |b|); and
    # min(CE, tau) is 1-Lipschitz in both.
    if ogc:
      per_example = bound
      refit = state1.step_state.step[0] % LOSSES[loss]["loss.refit_every"] == 0 and window1.count[0] == window.size
      for name in ("means", "variances", "weights", "threshold"):
        if not refit:
          np.testing.assert_array_equal(getattr(state1.step_state, name), getattr(state4.step_state, name))
    else:
      refit, losses = False, window1.losses[0][: window1.count[0]]
      per_example = np.maximum(bound, bound.max() + 2 * gamma(3) * 3 * np.abs(losses).max())
    if not refit:
      loss1, loss4 = m1["train_loss"][0, 0], m4["train_loss"][0, 0]
      assert abs(loss1 - loss4) <= per_example.mean() + 2 * gamma(63) * max(loss1, loss4), (t, loss1, loss4)
  if ogc:
    assert int(state1.step_state.step[0]) == 8 and int(window1.count[0]) == 256
    for s in (state1, state4):  # both refitted within the 8 steps
      assert 1e-7 < float(s.step_state.threshold[0]) < 1


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSSES))
def test_step_state_resumes_exactly_and_runs_on_four_devices(tmp_path, loss):
  cfg = lambda n=0: tiny(num_epochs=3, num_devices=n, **{"loss.name": loss}, **LOSSES[loss])
  full, cut, four = tmp_path / "full", tmp_path / "cut", tmp_path / "four"
  summary = train.train_and_evaluate(cfg(1), str(full))
  # The label audit of every run: a ranked list and its precision at k = number of flipped labels.
  replica = summary["replicas"][0]
  assert os.path.exists(full / replica["label_audit_file"])
  assert 0 <= replica["label_audit_precision_at_k"] <= 1 and replica["label_audit_k"] > 0
  train.train_and_evaluate(cfg(1), str(cut))
  ckpts = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(ckpts[-1]))  # resume from the end of epoch 2: the state must come back
  os.remove(cut / "summary.json")
  train.train_and_evaluate(cfg(1), str(cut))
  assert_same_run(full, cut)  # exactly
  train.train_and_evaluate(cfg(4), str(four))
  # 57 steps amplify per-step rounding (see tests/test_train.py); a wrong (per-device) state moves epoch losses
  # and clipped fractions by percents.
  assert_same_run(full, four, loss_rtol=1e-3, acc_atol=0.01)
  h = history(full)
  assert 0 < h[-1]["clipped_fraction"][0] < 1
  assert h[-1]["test_accuracy"][0] > 0.5
