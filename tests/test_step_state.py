"""Loss state across steps in the trainer (robust_losses.protocol.StepState): OGC's threshold schedule and
windowed clipping keep a fixed-size state updated from the global batch, checkpointed, and identical on 1 and
4 devices (digits, 4 simulated CPU devices from conftest)."""

import os
import shutil

import jax
import numpy as np
import pytest

import robust_losses as rl
from experiments import train
from tests.test_train import GAMMA_64, assert_same_run, build, data, history, one_chunk, tiny

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


@pytest.mark.parametrize("loss", list(LOSSES))
def test_first_steps_on_one_device_equal_four_to_reduction_order(loss):
  ds = data.load(tiny().data)
  outs = []
  for n in (1, 4):
    c = tiny(num_devices=n, **{"loss.name": loss}, **LOSSES[loss])
    _, new, m = one_chunk(build(c, ds), ds, 8)
    outs.append((np.asarray(m["train_loss"][0]), jax.tree.map(np.asarray, new.step_state)))
  (loss1, state1), (loss4, state4) = outs
  # 8 steps from the same start: the losses in the state differ only by the float32 reduction order of the
  # gradients (GAMMA_64 per step, compounded over 8 updates); a per-device statistic or window would hold
  # other examples altogether and differ by O(1).
  np.testing.assert_allclose(loss1, loss4, rtol=8 * GAMMA_64 * 10)
  assert jax.tree.structure(state1) == jax.tree.structure(state4)
  for a, b in zip(jax.tree.leaves(state1), jax.tree.leaves(state4)):
    if np.issubdtype(a.dtype, np.integer):
      np.testing.assert_array_equal(a, b)  # counts, positions, refit steps: exactly
    else:
      np.testing.assert_allclose(a, b, rtol=8 * GAMMA_64 * 10, atol=1e-6)
  if loss == "optimized_gradient_clipping":
    assert int(state1.step[0]) == 8 and int(state1.queue.count[0]) == 256
    assert 1e-7 < float(state1.threshold[0]) < 1  # refitted within the 8 steps


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
