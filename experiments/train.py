"""Trains a classifier on noisy labels with a robust loss; data-parallel over all devices.

  python -m experiments.train --config=configs/digits.py --workdir=runs/digits [--config.key=value ...]

Rerunning the same command on the same workdir resumes from the last complete checkpoint. WORKDIR gets
config.json, noisy_labels.npz (every replica's training labels, reloadable with noise.kind=file),
metrics.jsonl (one line per replica and epoch), TensorBoard events in tb/, checkpoints/ and, at the end,
summary.json. With val_fraction > 0 a share of the training set is held out after the noise is applied and
each replica's epoch is selected by its accuracy there (summary.json `selected_epoch`). The loop is
`train_and_evaluate`; the compiled step is in train_lib.py, the data layer in data/, evaluation in
evaluation.py, what is written in records.py, the process around it in runtime.py.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import (
  audit,
  checkpoints,
  data,
  evaluation,
  finetune,
  models,
  optimizers,
  records,
  rng,
  runtime,
  train_lib,
)
from experiments import settings as run_settings
from experiments.mesh import AXIS, make_mesh, replicate


class NonFiniteError(FloatingPointError):
  pass


class Hook:
  """Called by the loop at every epoch; subclass and override what you need (benchmarks time epochs this
  way). `record` is the epoch's record ({metric: [per replica]}), as written to metrics.jsonl."""

  def on_epoch_start(self, epoch: int) -> None:
    """Before the epoch's first step (0-based epoch; also when a run resumes mid-epoch)."""

  def on_epoch_end(self, record: dict, state) -> None:
    """After the epoch's evaluation and records, before its checkpoint."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, settings: list[dict] | None = None, hooks=()
) -> dict:
  """Trains `config.num_seeds` seeds (× each noise setting in `settings`, default config.noise) as vmapped
  replicas of one program; returns (and writes) the summary."""
  # ---- Everything that can fail before compiling, fails here.
  settings_given, settings = settings, run_settings.noise_settings(config, settings)
  run_settings.validate_static(config, settings)
  resuming = checkpoints.has_checkpoint(workdir)
  # Read pretrained weights before the data and any compilation: a wrong file fails in seconds. A resumed
  # run continues from its own checkpoint instead.
  pretrained = finetune.load(config.init_from) if config.init_from and not resuming else None
  dataset = data.load(config.data, seed=config.seed)
  run_settings.validate_with_data(config, dataset, settings)
  spe = max(len(dataset.train) // config.batch_size, 1)
  checkpoints.guard_workdir(workdir, config, {"noise_settings": settings} if settings_given else None, spe)
  if config.init_from and pretrained is None and not checkpoints.has_checkpoint(workdir):
    pretrained = finetune.load(config.init_from)  # the guard moved another config's run aside
  lead = jax.process_index() == 0

  # ---- The replicas (noise setting × seed), their noisy labels, the loss and the program.
  selection = run_settings.selection(config, dataset)
  run = build(config, dataset, settings)
  dataset, noisy, replicas, loss_fn, prog = run.dataset, run.noisy, run.replicas, run.loss_fn, run.prog
  if lead:
    run_settings.write_noisy_labels(workdir, run.noisy_all, replicas)
    if any(n["kind"] == "file" for n in settings):
      print(run_settings.file_noise_report(run.noisy_all, replicas), flush=True)
    if run.split is not None:
      print(
        f"validation: {len(run.split[1])} of {len(run.split[0]) + len(run.split[1])} training examples held out "
        f"(val_fraction={config.val_fraction}, scored on their {config.val_labels} labels); the epoch is selected "
        "by val_accuracy"
      )
  setup = records.setup_info(config, dataset, _model_name(config, dataset), noisy, replicas)
  if lead:
    print("\n".join(records.setup_lines(setup)), flush=True)
  spe, total = prog.steps_per_epoch, config.num_epochs * prog.steps_per_epoch
  chunk = 1 if prog.loop_free else (config.steps_per_call or spe)
  keys = jax.random.wrap_key_data(replicate(prog.mesh, jax.random.key_data(rng.replica_keys([s for _, s in replicas]))))
  labels = replicate(prog.mesh, np.stack([nl.labels for nl in noisy]))
  is_noisy = replicate(prog.mesh, np.stack([nl.is_noisy for nl in noisy]))
  feed = data.train_feed(dataset, prog.mesh, keys, run.seeds, config.batch_size, spe, config.data)
  if lead and not feed.per_replica and len(replicas) > 1:
    print(f"input: streamed batches are shared by all {len(replicas)} replicas, in seed {config.seed}'s order")
  evaluator = evaluation.Evaluator(prog, dataset, noisy, config, run.val_labels)
  learning_rate = optimizers.learning_rate_fn(config, spe)
  train_chunk = train_lib.train_chunk_fn(prog)

  # ---- Initial state, or the last checkpoint.
  state = train_lib.init_state(prog, keys, dataset.image_shape)
  if pretrained is not None:
    state = finetune.initialize(config, state, len(replicas), pretrained)
  if jax.process_count() > 1:
    # The first cross-process collective (orbax's sync below) initialises gloo on CPU, which gives up if the
    # processes arrive more than 30 s apart; reading and compiling above can differ by that much under load.
    from experiments import multihost

    multihost.barrier("ready")
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  meta = {"step": 0, "history": [], "train_seconds": 0.0, "accum": None}
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, meta = restored
    if lead:
      print(f"Resuming from step {meta['step']} (epoch {meta['step'] / spe:.2f}) in {workdir}")
  history, step = meta["history"], int(meta["step"])
  epoch_metrics = records.EpochMetrics(len(replicas), meta["accum"])
  log = records.Records(workdir, replicas, lead, purge_step=len(history) + 1)
  progress = records.Progress(config, total, step, lead)
  t0, seconds_before = time.time(), float(meta["train_seconds"])

  def finish(status, error=None):
    log.write_metrics(history)  # also after a kill between the last checkpoint and its records
    seconds = seconds_before + time.time() - t0
    summary = records.summarise(
      config,
      history,
      run.noisy_all,
      replicas,
      seconds,
      status,
      error,
      num_devices=prog.mesh.size,
      setup=setup,
      selection=selection,
    )
    if status == "completed" and lead:
      labels = [records.replica_label(n, s) for n, s in replicas]
      train_index = None if run.split is None else run.split[0]
      audit.add_to_summary(summary, audit.finish(workdir, config, noisy, labels, train_index))
    if lead:
      records.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary

  def save(accum=None):
    meta = {"step": step, "history": history, "accum": accum, "train_seconds": seconds_before + time.time() - t0}
    ckpt.save(step, state, meta)

  # ---- The loop: epochs of compiled calls, each `chunk` steps; evaluation and records after each epoch.
  try:
    with runtime.deferred_interrupts() as interrupted:
      while step < total:
        epoch, done = divmod(step, spe)
        if done == 0:
          epoch_metrics = records.EpochMetrics(len(replicas))
          if loss_fn.refresh_due(epoch):
            state = state.replace(loss_state=replicate(prog.mesh, evaluator.refresh_loss_state(state)))
        for hook in hooks:
          hook.on_epoch_start(epoch)
        feed.start_epoch(epoch, done)
        epoch_start, train_time, trained = time.time(), 0.0, 0
        while step < (epoch + 1) * spe:
          call_start = time.time()
          n = min(chunk, (epoch + 1) * spe - step)
          state, m = train_chunk(state, keys, labels, is_noisy, feed.next(n), jnp.arange(step, step + n))
          feed.prefetch(min(chunk, (epoch + 1) * spe - step - n))  # read ahead while the devices run
          m = jax.tree.map(np.asarray, m)  # [R, n] each; waits for the call
          train_time, trained = train_time + time.time() - call_start, trained + n * config.batch_size
          if not m["finite"].all() and not config.skip_nonfinite:
            raise NonFiniteError(_non_finite_message(config, step + int(np.argmax(~m["finite"].all(0))), spe, ckpt))
          epoch_metrics.add(m)
          step += n
          progress.update(n, epoch_metrics)
          if interrupted() and step % spe:
            raise runtime.Interrupted()  # mid-epoch: state, step and the epoch's metrics belong together here

        record = {"epoch": epoch + 1, "step": step, **epoch_metrics.means()}
        for key, value in state.loss_state.items():  # e.g. the share of truncated-Lq weights still 1
          record[f"loss_state_mean/{key}"] = np.asarray(value, np.float64).reshape(len(replicas), -1).mean(1)
        record.update(evaluator.metrics(state))
        if audit.due(epoch, config):  # the label audit's pass, stored before this epoch's checkpoint
          predictions, given_label_losses = evaluator.label_scores(state)
          if lead:
            audit.record_epoch(workdir, epoch, predictions, given_label_losses)
        record["learning_rate"] = float(learning_rate(epoch * spe))
        record["epoch_seconds"] = time.time() - epoch_start
        record["train_examples_per_second"] = trained / max(train_time, 1e-9)
        history.append(records.jsonable(record))
        if config.skip_nonfinite and (
          problem := records.skipped_problem(history, spe, log.labels, config.skip_nonfinite_max_share)
        ):
          raise NonFiniteError(f"{problem} {_kept(ckpt)}.")
        if (epoch + 1) % config.checkpoint_every_epochs == 0 or step == total:
          save()
        log.epoch(history)
        progress.epoch(history[-1], replicas, config.num_epochs)
        for hook in hooks:
          hook.on_epoch_end(history[-1], state)
        if interrupted():
          raise runtime.Interrupted()
  except runtime.Interrupted:
    save(epoch_metrics.state() if step % spe else None)
    ckpt.wait()
    finish("interrupted")
    if lead:
      print(f"\nInterrupted: saved a checkpoint at step {step}; rerun the same command to resume.", flush=True)
    raise KeyboardInterrupt from None
  except NonFiniteError as e:
    finish("failed", str(e))
    raise
  finally:
    progress.close()
    ckpt.close()
    log.close()
  summary = finish("completed")
  if lead:
    for s in summary["settings"]:
      std = lambda k: f"±{s[k + '_std']:.4f}" if len(s["seeds"]) > 1 else ""
      selected = (
        f"selected {s['test_accuracy_selected']:.4f}{std('test_accuracy_selected')}, "
        if "test_accuracy_selected" in s
        else ""
      )
      print(
        f"{s['setting']} (realised {s['noise_rate_realised']:.3f}, {len(s['seeds'])} seed(s)): test accuracy "
        f"{selected}last {s['test_accuracy_last']:.4f}{std('test_accuracy_last')}, best-test oracle "
        f"{s['test_accuracy_best']:.4f}{std('test_accuracy_best')}"
      )
    print(f"summary in {os.path.join(workdir, 'summary.json')}")
  return summary


def _model_name(config, dataset) -> str:
  return models.default_for(dataset.image_shape) if config.model == "auto" else config.model


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run trains, built before anything is compiled (`build`)."""

  seeds: list[int]
  replicas: list[tuple[dict, int]]  # (noise setting, seed), the order of the vmapped replicas
  noisy_all: list  # per replica, noise.NoisyLabels of the whole training set (what noisy_labels.npz holds)
  split: tuple | None  # (train, validation) indices into the whole training set, or None
  dataset: data.Data  # the training set after the validation split
  noisy: list  # per replica, the noisy labels of `dataset`
  val_labels: np.ndarray | None  # per replica, the labels the validation split is scored on
  loss_fn: object
  prog: train_lib.Program


def build(config, dataset, settings: list[dict]) -> Run:
  """The replicas of a run (each noise setting × seed), their noisy labels, the validation split, the loss
  and the program, from a checked config and its loaded dataset."""
  seeds = [config.seed + i for i in range(config.num_seeds)]
  replicas = [(n, s) for n in settings for s in seeds]
  # The noise is drawn on the whole training set, then the validation split (if any) is taken from it: the
  # held-out examples keep the noisy labels of the same draw, and noisy_labels.npz covers every example.
  noisy_all = run_settings.noisy_labels(config, dataset, replicas)
  split = run_settings.validation_split(config, dataset)
  train_set, noisy, val_labels = dataset, noisy_all, None
  if split is not None:
    train_set, noisy, val_labels = run_settings.hold_out(config, dataset, noisy_all, split)
  rate = np.mean([nl.rate_realised for nl in noisy])
  loss_fn = run_settings.build_loss(config, train_set.num_classes, settings, rate)
  prog = make_program(config, train_set, loss_fn)
  return Run(seeds, replicas, noisy_all, split, train_set, noisy, val_labels, loss_fn, prog)


def make_program(config, dataset, loss_fn) -> train_lib.Program:
  name = _model_name(config, dataset)
  model = models.create(
    name,
    num_classes=dataset.num_classes,
    input_shape=dataset.image_shape,
    axis_name=AXIS,
    dtype=run_settings.DTYPES[config.compute_dtype],
  )
  steps_per_epoch = len(dataset.train) // config.batch_size  # the remainder is dropped, reshuffled each epoch
  tx = optimizers.create(config, steps_per_epoch)
  if config.freeze_backbone:
    tx = finetune.freeze_backbone(tx)
  return train_lib.Program(
    model=model,
    loss_fn=loss_fn,
    tx=tx,
    mesh=make_mesh(jax.devices()[: config.num_devices] if config.num_devices else None),
    batch_size=config.batch_size,
    num_train=len(dataset.train),
    steps_per_epoch=steps_per_epoch,
    eval_batch_size=config.eval_batch_size,
    mean=tuple(dataset.mean),
    std=tuple(dataset.std),
    crop_pad=dataset.crop_pad,
    flip=dataset.flip,
    skip_nonfinite=config.skip_nonfinite,
    num_classes=dataset.num_classes,
    compute_dtype=run_settings.DTYPES[config.compute_dtype],
    loop_free=run_settings.loop_free(config, model),
    per_replica_batches=dataset.mode == "memory",
    freeze_backbone=config.freeze_backbone,
    learning_rate=optimizers.learning_rate_fn(config, steps_per_epoch),
  )


def _kept(ckpt) -> str:
  """What the workdir holds to go back to: only a checkpoint that was written."""
  if ckpt.last_step is None:
    return "No checkpoint was written before it"
  return f"The last good checkpoint (step {ckpt.last_step}) is kept"


def _non_finite_message(config, step, spe, ckpt) -> str:
  kept = _kept(ckpt)
  return (
    f"non-finite loss, gradient or parameters at step {step} (epoch {step // spe + 1}) with loss "
    f"{config.loss.name}: the usual causes are a learning rate too high for this loss, a loss hyperparameter "
    f"at the edge of its range, or float16/bfloat16 overflow. {kept}; set --config.skip_nonfinite=True to "
    "skip such steps instead."
  )


if __name__ == "__main__":
  runtime.cli(train_and_evaluate, "Training config file.")
