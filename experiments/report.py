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

CSV_FIELDS = (
  "loss",
  "loss_name",
  "noise_kind",
  "noise_rate",
  "seed",
  "test_accuracy_last",
  "test_accuracy_best",
  "best_epoch",
  "noise_rate_realised",
  "status",
  "train_seconds",
  "run",
)
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
  """One row per replica (loss, noise setting, seed) of every finished run.

  A run's numbers enter the table only if the config it ran with (stored in its summary) is the one the
  table says it is; otherwise this raises instead of reporting stale numbers.
  """
  from experiments import checkpoints  # local: the report stays importable without the training stack

  rows = []
  for run in runs:
    s = _summary(workdir, run)
    if s is None:
      continue
    diff = checkpoints.config_differences(s["config"], run["config"])
    if diff:
      raise checkpoints.ConfigMismatchError(
        f"{run['id']}: its summary was produced by another config ({', '.join(diff[:6])}); rerun the sweep "
        "with --config.rerun_changed=True or use a new workdir"
      )
    ok = s["status"] == "completed"
    for p in s["replicas"]:
      rows.append(
        {
          "loss": run["loss"]["label"],
          "loss_name": run["loss"]["name"],
          "noise_kind": p["noise_kind"],
          "noise_rate": p["noise_rate"],
          "seed": p["seed"],
          "test_accuracy_last": p["test_accuracy_last"] if ok else None,
          "test_accuracy_best": p["test_accuracy_best"] if ok else None,
          "best_epoch": p["best_epoch"],
          "noise_rate_realised": p["noise_rate_realised"],
          "status": s["status"],
          "train_seconds": s["train_seconds"],
          "run": run["id"],
        }
      )
  return rows


def _table(rows, losses, noises, metric) -> list[str]:
  stats = {}
  for loss in losses:
    for noise in noises:
      vals = [
        r[metric]
        for r in rows
        if r["loss"] == loss and _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise
      ]
      if vals:
        stats[loss, noise] = (
          None if any(v is None for v in vals) else (100 * np.mean(vals), 100 * np.std(vals), len(vals))
        )
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
  from experiments import records  # local: the report stays importable without the training stack

  run_dir = os.path.join(workdir, "runs", run["id"])
  s = _summary(workdir, run)
  if s is None or not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
    return None
  idx = [
    i for i, p in enumerate(s["replicas"]) if _noise_label({"kind": p["noise_kind"], "rate": p["noise_rate"]}) == noise
  ]
  hist = records.read_history(run_dir)
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
      ys = [
        [
          r["test_accuracy_last"]
          for r in rows
          if r["loss"] == loss
          and r["noise_kind"] == kind
          and r["noise_rate"] == x
          and r["test_accuracy_last"] is not None
        ]
        for x in pts
      ]
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
  specs = [
    ("test_accuracy_curves.png", [("test_accuracy", "-")], "test accuracy"),
    (
      "memorisation.png",
      [("train_memorised_noisy_subset", "-"), ("train_accuracy_clean_subset", ":")],
      "train acc: noisy subset fitted to its noisy label (—) / clean subset (···)",
    ),
    ("clipped_fraction.png", [("clipped_fraction", "-")], "fraction of examples clipped"),
  ]
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
            ax.plot(
              np.arange(1, len(ys) + 1), ys, color=colors[loss], ls=ls, label=loss if ls in ("-",) else None, lw=1.2
            )
      ax.set(title=noise, xlabel="epoch")
      ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
      ax.axis("off")
    fig.supylabel(ylabel, fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    paths.append(_save(fig, out_dir, fname))
  return paths


def _last(workdir, run, noise, key):
  ys = _curves(workdir, run, noise, key)
  return None if ys is None or not len(ys) else float(ys[-1])


def diagnostics(workdir, runs, noises) -> dict:
  """{loss label: {noise: (clipped fraction, precision, recall, flipped fraction)}} at the last epoch, for
  the rows that clipped anything: how well the clipped set finds the labels the noise model flipped."""
  out = {}
  for run in runs:
    for noise in (n for n in noises if n in {_noise_label(x) for x in run["noises"]}):
      vals = tuple(
        _last(workdir, run, noise, k)
        for k in ("clipped_fraction", "clipped_precision", "clipped_recall", "noisy_fraction")
      )
      if vals[0] is not None:
        out.setdefault(run["loss"]["label"], {})[noise] = vals
  return {loss: cells for loss, cells in out.items() if any(c[0] > 0 for c in cells.values())}


def _diagnostics_table(diag, noises) -> list[str]:
  if not diag:
    return []
  fmt = lambda x: "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f}"
  lines = [
    "## Clipping diagnostics (last epoch)",
    "",
    "Per cell: % of batch examples clipped / precision / recall of the clipped set as a detector of the "
    "labels the noise model flipped (% flipped in the batches in brackets); last column: correlation "
    "over the noise settings between the clipped and the flipped fraction.",
    "",
    "| loss | " + " | ".join(noises) + " | corr |",
    "|---" * (len(noises) + 2) + "|",
  ]
  for loss, cells in diag.items():
    row = [f"{fmt(c[0])} / {fmt(c[1])} / {fmt(c[2])} ({fmt(c[3])})" if (c := cells.get(n)) else "" for n in noises]
    pairs = np.array([(c[0], c[3]) for c in cells.values()], np.float64)
    corr = np.corrcoef(pairs.T)[0, 1] if len(pairs) > 2 and pairs.std(0).min() > 0 else np.nan
    lines.append(f"| {loss} | " + " | ".join(row) + f" | {corr:.2f} |")
  return lines + [""]


def _heatmap(rows, losses, noises, out_dir) -> str:
  import matplotlib.pyplot as plt

  grid = np.full((len(losses), len(noises)), np.nan)
  for i, loss in enumerate(losses):
    for j, noise in enumerate(noises):
      vals = [
        r["test_accuracy_last"]
        for r in rows
        if r["loss"] == loss
        and r["test_accuracy_last"] is not None
        and _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise
      ]
      if vals:
        grid[i, j] = 100 * np.mean(vals)
  fig, ax = plt.subplots(figsize=(1.1 * len(noises) + 3, 0.32 * len(losses) + 1.5), layout="constrained")
  im = ax.imshow(grid, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(noises)), noises, rotation=30, ha="right", fontsize=8)
  ax.set_yticks(range(len(losses)), losses, fontsize=8)
  for (i, j), v in np.ndenumerate(grid):
    if np.isfinite(v):
      ax.text(
        j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if v < np.nanmean(grid) else "black"
      )
  fig.colorbar(im, ax=ax, label="test accuracy (%, last epoch, mean over seeds)")
  return _save(fig, out_dir, "accuracy_heatmap.png")


def _diagnostics_plot(diag, out_dir) -> str:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
  for i, (loss, cells) in enumerate(diag.items()):
    c = np.array([v for v in cells.values()], np.float64)
    color = plt.cm.tab10(i % 10)
    axes[0].plot(c[:, 3], c[:, 0], "o", color=color, label=loss)
    axes[1].plot(c[:, 2], c[:, 1], "o", color=color, label=loss)
  axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
  axes[0].set(xlabel="flipped fraction of the batches", ylabel="clipped fraction", title="clipping vs noise")
  axes[1].set(
    xlabel="recall (flipped labels clipped)",
    ylabel="precision (clipped that were flipped)",
    title="clipped set as a noise detector",
    xlim=(0, 1),
    ylim=(0, 1),
  )
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7, loc="lower left")
  return _save(fig, out_dir, "clipping_diagnostics.png")


def _save(fig, out_dir, name) -> str:
  import matplotlib.pyplot as plt

  path = os.path.join(out_dir, name)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _config_section(runs) -> list[str]:
  """The configuration every number above came from: each row's loss and overrides, and the shared base."""
  out = [
    "## Configuration",
    "",
    "Every cell above was produced by (and checked against) this configuration.",
    "",
    "| row | loss | hyperparameters and overrides |",
    "|---|---|---|",
  ]
  seen = set()
  for run in runs:
    label = run["loss"]["label"]
    if label in seen:
      continue
    seen.add(label)
    loss = {k: v for k, v in run["config"].loss.items() if k != "name" and v is not None}
    extra = ", ".join(
      [f"{k}={v}" for k, v in loss.items()] + [f"{k}={v}" for k, v in run["loss"].get("overrides", {}).items()]
    )
    out.append(f"| {label} | `{run['config'].loss.name}` | {extra or '(defaults)'} |")
  base = json.loads(runs[0]["config"].to_json()) if runs else {}
  shared = ", ".join(f"{k}={v}" for k, v in sorted(base.items()) if k not in ("loss", "noise"))
  return out + ["", f"Base training config (all rows): {shared}", ""]


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
  md = [
    f"# Sweep results ({len(cells)}/{len(losses) * len(noises)} cells, seeds {seeds})",
    "",
    "Test accuracy (%), mean ± std over seeds; best loss per column in **bold**.",
    "",
    "## Last epoch",
    "",
    *_table(rows, losses, noises, "test_accuracy_last"),
    "",
    "## Best epoch",
    "",
    "(epoch picked on the clean validation hold-out when `val_size` > 0, otherwise on the "
    "test set — optimistic, as reported by many noisy-label papers)",
    "",
    *_table(rows, losses, noises, "test_accuracy_best"),
    "",
  ]
  diag = diagnostics(workdir, runs, noises)
  md += _diagnostics_table(diag, noises)
  md += _config_section(runs)
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  plots = _plots(workdir, runs, rows, losses, noises) if rows else []
  if rows:
    plots.append(_heatmap(rows, losses, noises, os.path.join(workdir, "plots")))
  if diag:
    plots.append(_diagnostics_plot(diag, os.path.join(workdir, "plots")))
  return {"csv": csv_path, "md": md_path, "plots": plots}
