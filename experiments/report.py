"""Tables and plots of a sweep: which loss helps at which noise, and by how much.

Reads each run's summary.json and metrics.jsonl (written by experiments/train.py; a run holds one loss at
one or more noise settings, each over several seeds) and writes
results.csv (one row per seed), results.md (loss × noise tables of mean ± std over seeds, last- and
best-epoch accuracy, best loss per column in bold) and plots/*.png.
"""
from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np

CSV_FIELDS = ("loss", "loss_name", "noise_kind", "noise_rate", "seed", "test_accuracy_last",
              "test_accuracy_best", "best_epoch", "noise_rate_realised", "status", "train_seconds", "run")
DONE = ("completed", "failed")  # a diverged run is a result too; it is not rerun


def finished(summary_path: str) -> bool:
  if not os.path.exists(summary_path):
    return False
  with open(summary_path) as f:
    return json.load(f).get("status") in DONE


def _noise_label(noise: dict) -> str:
  return f"{noise['kind']} {noise['rate']:g}"


def _summary(workdir, run):
  path = os.path.join(workdir, "runs", run["id"], "summary.json")
  if not finished(path):
    return None
  with open(path) as f:
    return json.load(f)


def collect(workdir: str, runs: list[dict]) -> list[dict]:
  """One row per replica (loss, noise setting, seed) of every finished run."""
  rows = []
  for run in runs:
    s = _summary(workdir, run)
    if s is None:
      continue
    ok = s["status"] == "completed"
    for p in s["per_seed"]:
      rows.append({"loss": run["loss"]["label"], "loss_name": run["loss"]["name"],
                   "noise_kind": p["noise_kind"], "noise_rate": p["noise_rate"], "seed": p["seed"],
                   "test_accuracy_last": p["test_accuracy_last"] if ok else None,
                   "test_accuracy_best": p["test_accuracy_best"] if ok else None,
                   "best_epoch": p["best_epoch"], "noise_rate_realised": p["noise_rate_realised"],
                   "status": s["status"], "train_seconds": s["train_seconds"], "run": run["id"]})
  return rows


def _table(rows, losses, noises, metric) -> list[str]:
  stats = {}
  for loss in losses:
    for noise in noises:
      vals = [r[metric] for r in rows if r["loss"] == loss and _noise_label(
          {"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise]
      if vals:
        stats[loss, noise] = (None if any(v is None for v in vals) else
                              (100 * np.mean(vals), 100 * np.std(vals), len(vals)))
  best = {n: max((stats[l, n][0] for l in losses if stats.get((l, n))), default=None) for n in noises}
  lines = ["| loss | " + " | ".join(noises) + " |", "|---" * (len(noises) + 1) + "|"]
  for loss in losses:
    cells = []
    for noise in noises:
      if (loss, noise) not in stats:
        cells.append("")
      elif stats[loss, noise] is None:
        cells.append("diverged")
      else:
        m, s, _ = stats[loss, noise]
        text = f"{m:.2f} ± {s:.2f}"
        cells.append(f"**{text}**" if best[noise] is not None and m == best[noise] else text)
    lines.append(f"| {loss} | " + " | ".join(cells) + " |")
  return lines


def _curves(workdir, run, noise, key):
  """Per-epoch metric of one cell: mean over the run's replicas (seeds) at that noise setting."""
  path = os.path.join(workdir, "runs", run["id"], "metrics.jsonl")
  s = _summary(workdir, run)
  if s is None or not os.path.exists(path):
    return None
  idx = [i for i, p in enumerate(s["per_seed"]) if _noise_label({"kind": p["noise_kind"], "rate": p["noise_rate"]})
         == noise]
  with open(path) as f:
    hist = [json.loads(line) for line in f if line.strip()]
  with warnings.catch_warnings():  # an all-NaN cell (e.g. memorisation without noisy labels) stays NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    vals = [np.nanmean(np.asarray(h[key], np.float64)[idx]) if h.get(key) is not None else np.nan for h in hist]
  return np.asarray(vals)


def _plots(workdir, runs, rows, losses, noises) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  colors = {l: plt.cm.tab20(i % 20) for i, l in enumerate(losses)}
  styles = {l: ("-" if i < 10 else "--") for i, l in enumerate(losses)}

  # 1. Test accuracy vs noise rate, one panel per noise kind.
  kinds = sorted({r["noise_kind"] for r in rows})
  fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
  for ax, kind in zip(axes[0], kinds):
    for loss in losses:
      pts = sorted({r["noise_rate"] for r in rows if r["loss"] == loss and r["noise_kind"] == kind})
      ys = [[r["test_accuracy_last"] for r in rows if r["loss"] == loss and r["noise_kind"] == kind and
             r["noise_rate"] == x and r["test_accuracy_last"] is not None] for x in pts]
      keep = [(x, 100 * np.mean(y), 100 * np.std(y)) for x, y in zip(pts, ys) if y]
      if keep:
        x, m, s = map(np.asarray, zip(*keep))
        ax.errorbar(x, m, yerr=s, label=loss, color=colors[loss], ls=styles[loss], marker="o", ms=3, capsize=2)
    ax.set(title=f"{kind} noise", xlabel="noise rate η", ylabel="test accuracy (%, last epoch)")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower left", ncol=2)
  paths.append(_save(fig, out_dir, "accuracy_vs_noise.png"))

  # 2. Test-accuracy curves per epoch (as TCE Fig. 2), 3. memorisation, 4. clipped fraction: per noise.
  by_noise = {}
  for run in runs:
    for noise in run["noises"]:
      by_noise.setdefault(_noise_label(noise), []).append(run)
  specs = [("test_accuracy_curves.png", [("test_accuracy", "-")], "test accuracy"),
           ("memorisation.png", [("train_memorised_noisy_subset", "-"), ("train_accuracy_clean_subset", ":")],
            "train acc: noisy subset fitted to its noisy label (—) / clean subset (···)"),
           ("clipped_fraction.png", [("clipped_fraction", "-")], "fraction of examples clipped")]
  for fname, keys, ylabel in specs:
    panels = [n for n in noises if n in by_noise]
    if fname == "clipped_fraction.png":
      if not any("clip" in r["loss"]["name"] for r in runs):
        continue
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.4 * nrow), squeeze=False, layout="constrained")
    for ax, noise in zip(axes.flat, panels):
      for run in by_noise[noise]:
        if fname == "clipped_fraction.png" and "clip" not in run["loss"]["name"]:
          continue
        loss = run["loss"]["label"]
        for key, ls in keys:
          ys = _curves(workdir, run, noise, key)
          if ys is not None and len(ys):
            ax.plot(np.arange(1, len(ys) + 1), ys, color=colors[loss], ls=ls,
                    label=loss if ls in ("-",) else None, lw=1.2)
      ax.set(title=noise, xlabel="epoch")
      ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
      ax.axis("off")
    fig.supylabel(ylabel, fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    paths.append(_save(fig, out_dir, fname))
  return paths


def _save(fig, out_dir, name) -> str:
  import matplotlib.pyplot as plt
  path = os.path.join(out_dir, name)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def write(workdir: str, runs: list[dict]) -> dict:
  rows = collect(workdir, runs)
  losses = list(dict.fromkeys(r["loss"]["label"] for r in runs))
  noises = list(dict.fromkeys(_noise_label(n) for r in runs for n in r["noises"]))
  cells = {(r["loss"], r["noise_kind"], r["noise_rate"]) for r in rows}
  csv_path = os.path.join(workdir, "results.csv")
  with open(csv_path + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    w.writeheader()
    w.writerows(rows)
  os.replace(csv_path + ".tmp", csv_path)
  seeds = sorted({r["seed"] for r in rows})
  md = [f"# Sweep results ({len(cells)}/{len(losses) * len(noises)} cells, seeds {seeds})", "",
        "Test accuracy (%), mean ± std over seeds; best loss per column in **bold**.", "",
        "## Last epoch", "", *_table(rows, losses, noises, "test_accuracy_last"), "",
        "## Best epoch", "", "(epoch picked on the clean validation hold-out when `val_size` > 0, otherwise on the "
        "test set — optimistic, as reported by many noisy-label papers)", "",
        *_table(rows, losses, noises, "test_accuracy_best"), ""]
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  plots = _plots(workdir, runs, rows, losses, noises) if rows else []
  return {"csv": csv_path, "md": md_path, "plots": plots}
