"""What a run writes: metrics.jsonl, TensorBoard events, summary.json and the console lines.

Every replica (one noise setting × one seed) is its own labelled series everywhere: one metrics.jsonl line
per replica and epoch, one TensorBoard run per replica (tb/<label>/), one summary entry per replica; means
± std appear only over the seeds of one noise setting. The per-step metrics are declared once, in the train
step (train_lib.train_step); `EpochMetrics` averages whatever it returns over an epoch's finite steps.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from experiments import noise, splits


# ------------------------------------------------------------------------------------------------ JSON
def jsonable(x):
  """JSON-safe copy: arrays as lists, non-finite floats as null (JSON has no NaN)."""
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, np.ndarray):
    return [jsonable(v) for v in x.tolist()]
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return jsonable(x.item())
  return x


def write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(jsonable(obj), f, indent=2)
  os.replace(tmp, path)  # atomic: a reader never sees half a file


# -------------------------------------------------------------------------------------------- replicas
def replica_label(setting: dict, seed: int) -> str:
  """'symmetric:0.4/seed0': the name of one replica's series."""
  return f"{setting['kind']}:{setting['rate']:g}/seed{seed}"


def setting_label(setting: dict) -> str:
  return f"{setting['kind']}:{setting['rate']:g}"


# ---------------------------------------------------------------------------------------- epoch metrics
class EpochMetrics:
  """Sums of the step metrics over an epoch's finite steps, per replica (lists: they go into the JSON
  checkpoint metadata when a run stops mid-epoch)."""

  def __init__(self, num_replicas: int, saved: dict | None = None):
    self.sums = dict(saved["sums"]) if saved else {}
    self.finite = list(saved["finite"]) if saved else [0] * num_replicas
    self.skipped = list(saved["skipped"]) if saved else [0] * num_replicas

  def add(self, metrics: dict) -> None:
    """metrics: {name: [R, n]} for n steps, with 'finite' (bool [R, n])."""
    ok = np.asarray(metrics["finite"])
    for key, value in metrics.items():
      if key != "finite":
        total = np.asarray(self.sums.get(key, np.zeros(len(ok)))) + np.where(ok, value, 0.0).sum(1)
        self.sums[key] = total.tolist()
    self.finite = (np.asarray(self.finite) + ok.sum(1)).tolist()
    self.skipped = (np.asarray(self.skipped) + (~ok).sum(1)).tolist()

  def state(self) -> dict:
    return {"sums": self.sums, "finite": self.finite, "skipped": self.skipped}

  def means(self) -> dict:
    """{name: [R]} means over the finite steps (NaN for a replica without any), the skipped-step counts, and
    the clipped set as a detector of flipped labels: precision (share of clipped examples that were flipped)
    and recall (share of flipped examples that were clipped), NaN where undefined."""
    finite = np.asarray(self.finite, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
      out = {k: np.asarray(v, np.float64) / finite for k, v in self.sums.items()}
      hit, clipped, flipped = out["clipped_noisy_fraction"], out["clipped_fraction"], out["noisy_fraction"]
      out["clipped_precision"] = np.where(clipped > 0, hit / clipped, np.nan)
      out["clipped_recall"] = np.where(flipped > 0, hit / flipped, np.nan)
    out["skipped_steps"] = np.asarray(self.skipped)
    return out


# The default of config.skip_nonfinite_max_share: with skip_nonfinite, a run fails once a replica has skipped
# more than this share of its steps so far (checked after every epoch).
MAX_SKIPPED_SHARE = 0.05


def skipped_problem(
  history: list[dict], steps_per_epoch: int, labels: list[str], max_share: float = MAX_SKIPPED_SHARE
) -> str | None:
  """Why the run must stop for skipped (non-finite) steps (more than `max_share` of a replica's steps so
  far), or None."""
  skipped = np.sum([h["skipped_steps"] for h in history], axis=0)
  total = len(history) * steps_per_epoch
  worst = int(np.argmax(skipped))
  if skipped[worst] <= max_share * total:
    return None
  return (
    f"replica {labels[worst]} skipped {int(skipped[worst])} of its {total} steps so far (non-finite loss, gradient "
    f"or parameters), more than the {max_share:.0%} that skip_nonfinite=True tolerates (skip_nonfinite_max_share): its "
    "numbers would not describe a trained model. The usual causes are a learning rate too high for this loss, a loss "
    "hyperparameter at the edge of its range, or float16/bfloat16 overflow."
  )


# ------------------------------------------------------------------------------------------------ files
def read_history(workdir: str, timing: bool = True) -> list[dict]:
  """metrics.jsonl regrouped per epoch: [{metric: [value per replica], 'epoch', 'step', ...}]; without
  `timing`, the wall-clock fields are left out (what must equal between two runs of the same training)."""
  by_epoch: dict[int, dict] = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        epoch = by_epoch.setdefault(row["epoch"], {})
        for key, value in row.items():
          if not timing and key in TIMING:
            continue
          if key in ("epoch", "step") or key in EPOCH_SCALARS:
            epoch[key] = value
          else:
            epoch.setdefault(key, []).append(value)
  return [by_epoch[e] for e in sorted(by_epoch)]


# Per-epoch values shared by every replica of a run; the last two measure the machine, not the training.
EPOCH_SCALARS = ("learning_rate", "epoch_seconds", "train_examples_per_second")
TIMING = ("epoch_seconds", "train_examples_per_second")


class Records:
  """Writes a run's per-epoch records; only process 0 writes (`lead`)."""

  def __init__(self, workdir: str, replicas: list, lead: bool, purge_step: int):
    self.workdir, self.replicas, self.lead = workdir, replicas, lead
    self.labels = [replica_label(s, seed) for s, seed in replicas]
    self.writers = []
    if lead:
      self.writers = [
        _summary_writer(os.path.join(workdir, "tb", _slug(lb)), purge_step=purge_step) for lb in self.labels
      ]

  def epoch(self, history: list[dict]) -> None:
    """Rewrites metrics.jsonl from the whole history (a resumed run never repeats or loses a line) and
    logs the last epoch to TensorBoard."""
    self.write_metrics(history)
    if not self.lead:
      return
    for writer, row in zip(self.writers, self.rows(history[-1])):
      for key, value in row.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
          if math.isfinite(value):  # an undefined metric (e.g. recall without flipped labels) is not logged
            writer.add_scalar(key, value, row["epoch"])

  def write_metrics(self, history: list[dict]) -> None:
    if not self.lead or not history:
      return
    path = os.path.join(self.workdir, "metrics.jsonl")
    with open(path + ".tmp", "w") as f:
      for record in history:
        for row in self.rows(record):
          f.write(json.dumps(jsonable(row)) + "\n")
    os.replace(path + ".tmp", path)

  def rows(self, record: dict) -> list[dict]:
    """One labelled row per replica of an epoch record ({metric: [R]} and scalars)."""
    out = []
    for r, (label, (setting, seed)) in enumerate(zip(self.labels, self.replicas)):
      row = {"epoch": record["epoch"], "step": record["step"], "replica": label}
      row.update(noise_kind=setting["kind"], noise_rate=setting["rate"], seed=seed)
      for key, value in record.items():
        if key in ("epoch", "step"):
          continue
        row[key] = value if key in EPOCH_SCALARS else _item(np.asarray(value)[r])
      out.append(row)
    return out

  def close(self):
    for writer in self.writers:
      writer.close()


def _item(x):
  x = np.asarray(x)
  return x.item() if x.ndim == 0 else x.tolist()


def _slug(label: str) -> str:
  return label.replace("/", "_").replace(":", "_")


def console_line(record: dict, replicas: list, num_epochs: int) -> str:
  """The epoch's console line: test accuracy per noise setting (mean ± std over its seeds); for a run of one
  setting also the validation accuracy (with a validation split), the training loss, the training accuracy on
  the (noisy) labels trained on, and the share of flipped labels the model has memorised."""

  def stat(key, idx, fmt=".4f"):
    values = np.asarray(record[key], np.float64)[idx]
    values = values[np.isfinite(values)]
    if not len(values):
      return "n/a"
    return f"{values.mean():{fmt}}" + (f"±{values.std():{fmt}}" if len(idx) > 1 else "")

  line = (
    f"epoch {record['epoch']}/{num_epochs} ({record['epoch_seconds']:.1f} s, "
    f"{record['train_examples_per_second']:.0f} ex/s, lr {record['learning_rate']:.3g}) test acc"
  )
  groups = _by_setting(replicas)
  if len(groups) > 1:
    return line + " " + " | ".join(f"{label} {stat('test_accuracy', idx)}" for label, idx in groups.items())
  idx = next(iter(groups.values()))
  val = f", val acc {stat('val_accuracy', idx)}" if "val_accuracy" in record else ""
  return (
    f"{line} {stat('test_accuracy', idx)}{val}, train loss {stat('train_loss', idx)}, train acc on noisy labels "
    f"{stat('train_accuracy_noisy_labels', idx)}, noisy labels memorised "
    f"{stat('train_memorised_noisy_subset', idx, '.3f')}"
  )


class Progress:
  """On a terminal, a progress bar (tqdm) with the running training loss, the training accuracy on the noisy
  labels and the last test accuracy; in every mode one line per epoch (a log file gets no \\r frames)."""

  def __init__(self, config, total: int, initial: int, lead: bool):
    self.lead, self.test, self.bar = lead, None, None
    if lead and config.progress and sys.stdout.isatty():
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stdout)
      self.bar.set_description(config.loss.name)

  def update(self, n: int, epoch_metrics: EpochMetrics) -> None:
    if self.bar is None:
      return
    m = epoch_metrics.means()
    with np.errstate(invalid="ignore"):
      loss, acc = np.nanmean(m["train_loss"]), np.nanmean(m["train_accuracy_noisy_labels"])
    text = f"loss {loss:.3f}, acc on noisy labels {acc:.3f}"
    self.bar.update(n)
    self.bar.set_postfix_str(text + ("" if self.test is None else f", test acc {self.test:.3f}"))

  def epoch(self, record: dict, replicas: list, num_epochs: int) -> None:
    if not self.lead:
      return
    self.test = float(np.nanmean(np.asarray(record["test_accuracy"], np.float64)))
    line = console_line(record, replicas, num_epochs)
    if self.bar is not None:
      self.bar.write(line)
    else:
      print(line, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def _by_setting(replicas) -> dict[str, list[int]]:
  groups: dict[str, list[int]] = {}
  for r, (setting, _) in enumerate(replicas):
    groups.setdefault(setting_label(setting), []).append(r)
  return groups


# ------------------------------------------------------------------------------------------------ setup
def setup_info(config, dataset, model_name: str, noisy, replicas) -> dict:
  """What a run actually trains on, resolved from the config's defaults: the model ('auto' resolved), the
  dataset sizes and class mapping, the augmentation and the noise each replica's labels got. Printed at
  startup and recorded in summary.json['setup']."""
  val = dataset.val
  return {
    "model": model_name,
    "model_config": config.model,
    "dataset": {
      "name": dataset.name,
      "num_train": len(dataset.train),
      "num_test": len(dataset.test),
      "num_val": len(val) if val is not None else 0,
      "num_classes": dataset.num_classes,
      "image_shape": list(dataset.image_shape),
      "input": dataset.mode,
      "class_names": list(dataset.class_names),
    },
    "augmentation": {"augment": config.data.augment, "crop_pad": int(dataset.crop_pad), "flip": bool(dataset.flip)},
    "noise": [
      {
        "replica": replica_label(setting, seed),
        "kind": setting["kind"],
        "rate": setting["rate"],
        "rate_realised": float(nl.rate_realised),
        "num_noisy": int(np.sum(nl.is_noisy)),
      }
      for (setting, seed), nl in zip(replicas, noisy)
    ],
  }


def setup_lines(info: dict) -> list[str]:
  d, a = info["dataset"], info["augmentation"]
  auto = f" (model='auto' for {'x'.join(map(str, d['image_shape']))} inputs)" if info["model_config"] == "auto" else ""
  lines = [
    f"model: {info['model']}{auto}",
    f"data: {d['name']}, {d['num_train']} train / {d['num_test']} test / {d['num_val']} validation examples, "
    f"{d['num_classes']} classes, images {'x'.join(map(str, d['image_shape']))}, {d['input']}",
  ]
  if any(d["class_names"]):
    names = [f"{i}={n}" for i, n in enumerate(d["class_names"])]
    lines.append(f"classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
  aug = [f"random crop (zero padding {a['crop_pad']} px)"] if a["crop_pad"] else []
  aug += ["random horizontal flip"] if a["flip"] else []
  lines.append(
    f"augmentation: {' + '.join(aug) or 'none'} (data.augment={a['augment']!r}"
    f"{': the dataset default' if a['augment'] == 'default' else ''})"
  )
  for n in info["noise"]:
    lines.append(
      f"noise {n['replica']}: realised {n['rate_realised']:.3f} ({n['num_noisy']} of {d['num_train']} training "
      "labels changed)"
    )
  return lines


# ---------------------------------------------------------------------------------------------- summary
def summarise(
  config, history, noisy, replicas, train_seconds, status, error=None, num_devices=1, setup=None, selection=None
) -> dict:
  """summary.json: per replica (`replicas`), and per noise setting over its seeds (`settings`). The
  top-level accuracy fields exist only for a run of one noise setting (the mean over its seeds).

  Epochs reported per replica: `test_accuracy_last` (the last epoch); `best_epoch` and `test_accuracy_best`,
  the epoch of the best TEST accuracy, an optimistic oracle (it selects on the data it reports; kept for
  comparison with papers that report it). With a validation split (`selection`, from
  settings.selection: {"val_fraction", "val_labels", "ties": "earliest"}) also `selected_epoch` (1-based, the
  best `val_accuracy`, ties to the earliest: splits.select_epoch), `test_accuracy_selected` and
  `val_accuracy_selected`; without one these keys are absent.
  """
  selecting = selection is not None and bool(history) and "val_accuracy" in history[0]
  per_replica = []
  for r, (setting, seed) in enumerate(replicas):
    curve = [h["test_accuracy"][r] for h in history]
    best = int(np.nanargmax(np.asarray(curve, np.float64))) if curve else -1
    entry = {
      "replica": replica_label(setting, seed),
      "seed": seed,
      "noise_kind": setting["kind"],
      "noise_rate": setting["rate"],
      "test_accuracy_last": history[-1]["test_accuracy"][r] if history else None,
      "test_accuracy_best": history[best]["test_accuracy"][r] if history else None,
      "best_epoch": best + 1 if history else None,  # 1-based: epochs completed; the best-TEST oracle
    }
    if selecting:
      val = [np.nan if h["val_accuracy"][r] is None else h["val_accuracy"][r] for h in history]
      chosen = splits.select_epoch(val)
      entry["selected_epoch"] = chosen
      entry["test_accuracy_selected"] = history[chosen - 1]["test_accuracy"][r]
      entry["val_accuracy_selected"] = history[chosen - 1]["val_accuracy"][r]
    entry["noise_rate_realised"] = noisy[r].rate_realised
    entry["noise"] = noise.summary(noisy[r])
    per_replica.append(entry)
  accuracies = ["test_accuracy_last", "test_accuracy_best"]
  if selecting:
    accuracies += ["test_accuracy_selected", "val_accuracy_selected"]
  settings = []
  for label, idx in _by_setting(replicas).items():
    group = [per_replica[i] for i in idx]
    entry = {"setting": label, "noise_kind": group[0]["noise_kind"], "noise_rate": group[0]["noise_rate"]}
    entry["seeds"] = [p["seed"] for p in group]
    for key in (*accuracies, "noise_rate_realised"):
      values = [p[key] for p in group if p[key] is not None]
      entry[key] = float(np.mean(values)) if values else None
      entry[f"{key}_std"] = float(np.std(values)) if values else None
    settings.append(entry)
  out = {"status": status, "error": error}
  if len(settings) == 1:
    out.update({k: settings[0][k] for k in (*accuracies, "noise_rate_realised")})
    for key in ("best_epoch", "selected_epoch") if selecting else ("best_epoch",):
      out[key] = per_replica[0][key] if len(replicas) == 1 else [p[key] for p in per_replica]
  if selecting:
    out["selection"] = dict(selection)
  out.update(
    {
      "best_epoch_selected_by": "test_accuracy",  # an oracle; `selected_epoch` is chosen without test labels
      "train_seconds": train_seconds,
      "epochs_completed": len(history),
      "num_devices": num_devices,
      "seeds": sorted({s for _, s in replicas}),
      "settings": settings,
      "replicas": per_replica,
      "setup": setup,
      "config": json.loads(config.to_json()),
    }
  )
  return out


def _summary_writer(*args, **kwargs):
  """tensorboardX.SummaryWriter, imported without PyTorch: when torch is installed tensorboardX imports it
  (seconds) only to support torch tensors, which we never log."""
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
  try:
    from tensorboardX import SummaryWriter
  finally:
    if blocked:
      del sys.modules["torch"]
  return SummaryWriter(*args, **kwargs)
