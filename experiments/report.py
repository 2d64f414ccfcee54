"""Tables and plots of a sweep or of any set of run directories: which loss helps at which noise.

Reads each run's summary.json and metrics.jsonl (experiments/train.py; a run holds one loss at one or more
noise settings, each over several seeds) and writes results.csv (one row per replica: loss, noise setting,
seed), results.md (loss × noise tables of mean ± std over seeds, in %) and plots/*.png.

  python -m experiments.report RUN_DIR [RUN_DIR ...] [--out results.md] [--csv results.csv]

tabulates any run directories (each with a summary.json; a directory holding runs/ is read as a sweep).

Reading the tables (docs/METRICS.md has every column):
  * Column headings give the nominal noise setting and, in brackets, the realised share of flipped training
    labels (mean over the column's replicas): asymmetric noise flips only some classes, so it realises less.
  * A cell is **bold** when its mean is above the CE row's at the same noise by more than the two cells'
    seed standard deviations added, and above chance (100/K %) by more than its own deviation; a table
    without a CE row bolds nothing. A run that diverged is written `diverged`.
  * With a noisy validation split (summary keys `selected_epoch`, `test_accuracy_selected`), the
    selected-epoch table comes first, then the last epoch, then the best test epoch, labelled as the
    optimistic oracle it is, and a table of the row each loss family's noisy validation accuracy picks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
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
  "test_accuracy_selected",
  "val_accuracy_selected",
  "selected_epoch",
  "noise_rate_realised",
  "status",
  "train_seconds_share",
  "run",
)
DONE = ("completed", "failed")  # a diverged run is a result too (the sweep retries it on its next invocation)
SELECTED = ("selected_epoch", "test_accuracy_selected", "val_accuracy_selected")


def finished(summary_path: str) -> bool:
  if not os.path.exists(summary_path):
    return False
  with open(summary_path) as f:
    return json.load(f).get("status") in DONE


def _noise_label(noise: dict) -> str:
  return f"{noise['kind']} {float(noise['rate']):g}"


def _replica_rows(label, loss_name, run_id, run_dir, s) -> list[dict]:
  """One row per replica of a finished run's summary (accuracies None when it diverged)."""
  ok = s["status"] == "completed"
  out = []
  for i, p in enumerate(s["replicas"]):
    row = {
      "loss": label,
      "loss_name": loss_name,
      "noise_kind": p["noise_kind"],
      "noise_rate": p["noise_rate"],
      "seed": p["seed"],
      "test_accuracy_last": p["test_accuracy_last"] if ok else None,
      "test_accuracy_best": p["test_accuracy_best"] if ok else None,
      "best_epoch": p["best_epoch"],
      "noise_rate_realised": p["noise_rate_realised"],
      "status": s["status"],
      # The run's wall-clock time shared out over its replicas (vmapped together): a column sum is the
      # sweep's training time, never a multiple of it.
      "train_seconds_share": s["train_seconds"] / max(len(s["replicas"]), 1),
      "run": run_id,
      "_dir": run_dir,
      "_index": i,
      "_num_classes": len((p.get("noise") or {}).get("class_counts") or []) or None,
      "_select_by": s.get("best_epoch_selected_by", "test_accuracy"),
    }
    for key in SELECTED:
      row[key] = p.get(key) if ok or key == "selected_epoch" else None
    out.append(row)
  return out


def collect(workdir: str, table_rows: list[dict]) -> list[dict]:
  """One row per replica (loss, noise setting, seed) of every finished run under WORKDIR/runs whose config
  is a row of the table (seeds and noise settings aside), whichever invocation trained it; a replica held
  by two runs counts once."""
  from experiments import runs  # local: the report stays importable without the training stack

  rows, seen = [], set()
  for d in runs.scan(workdir):
    if d["status"] not in DONE:
      continue
    row = next((r for r in table_rows if not runs.differences(d["stored"], r["config"])), None)
    if row is None:
      continue  # another config's run (kept, never reported as this table's)
    for r in _replica_rows(row["loss"]["label"], row["config"].loss.name, d["id"], d["dir"], d["summary"]):
      key = (r["loss"], r["noise_kind"], r["noise_rate"], r["seed"])
      if key not in seen:
        seen.add(key)
        rows.append(r)
  return rows


def _cell_values(rows, loss, noise, metric):
  return [
    r[metric]
    for r in rows
    if r["loss"] == loss and _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise
  ]


def _stats(rows, losses, noises, metric) -> dict:
  """{(loss, noise): (mean %, std %, n) or None when the cell diverged}, for cells with rows."""
  stats = {}
  for loss in losses:
    for noise in noises:
      vals = _cell_values(rows, loss, noise, metric)
      if vals:
        stats[loss, noise] = (
          None if any(v is None for v in vals) else (100 * np.mean(vals), 100 * np.std(vals), len(vals))
        )
  return stats


def bold_cells(stats: dict, losses, noises, chance: float | None, reference: str = "CE") -> set:
  """The cells better than the reference row by more than the seeds' spread (both cells' std added) and
  above chance (`chance`, %) by more than their own std."""
  out = set()
  for noise in noises:
    ref = stats.get((reference, noise))
    if not ref:
      continue
    for loss in losses:
      c = stats.get((loss, noise))
      if not c or loss == reference:
        continue
      if c[0] - ref[0] > c[1] + ref[1] and (chance is None or c[0] - chance > c[1]):
        out.add((loss, noise))
  return out


def _chance(rows) -> float | None:
  ks = {r["_num_classes"] for r in rows if r.get("_num_classes")}
  return 100.0 / ks.pop() if len(ks) == 1 else None


def realised(rows, noise) -> float | None:
  vals = [
    r["noise_rate_realised"]
    for r in rows
    if _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise
    and r["noise_rate_realised"] is not None
  ]
  return float(np.mean(vals)) if vals else None


def heading(rows, noise) -> str:
  """'asymmetric 0.4 (0.20)': the nominal setting and the realised flipped share."""
  r = realised(rows, noise)
  return noise if r is None else f"{noise} ({r:.2f})"


def _table(rows, losses, noises, metric) -> list[str]:
  stats = _stats(rows, losses, noises, metric)
  bold = bold_cells(stats, losses, noises, _chance(rows))
  lines = ["| loss | " + " | ".join(heading(rows, n) for n in noises) + " |", "|---" * (len(noises) + 1) + "|"]
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
        cells.append(f"**{text}**" if (loss, noise) in bold else text)
    lines.append(f"| {loss} | " + " | ".join(cells) + " |")
  return lines


def families(rows, loss_names: dict) -> dict[str, list[str]]:
  """{registry loss name: [row labels]} for the losses with more than one row (rows differing only in a
  hyperparameter or an override)."""
  out: dict[str, list[str]] = {}
  for label, name in loss_names.items():
    out.setdefault(name, []).append(label)
  return {name: labels for name, labels in out.items() if len(labels) > 1}


def _chosen_table(rows, losses, noises) -> list[str]:
  """Per loss family and noise setting: the row whose noisy-validation accuracy (mean over seeds, at its
  selected epoch) is highest, with that row's test accuracy at its selected epoch."""
  names = {r["loss"]: r["loss_name"] for r in rows}
  fams = families(rows, {l: names[l] for l in losses if l in names})
  if not fams:
    return []
  val = _stats(rows, losses, noises, "val_accuracy_selected")
  test = _stats(rows, losses, noises, "test_accuracy_selected")
  lines = [
    "## Chosen by noisy validation",
    "",
    "Per loss family (rows of one registry loss differing only in a hyperparameter or override) and noise "
    "setting: the row with the best noisy-validation accuracy (mean over seeds at the selected epoch), and "
    "its test accuracy (%) at that epoch.",
    "",
    "| family | " + " | ".join(heading(rows, n) for n in noises) + " |",
    "|---" * (len(noises) + 1) + "|",
  ]
  for name, labels in fams.items():
    cells = []
    for noise in noises:
      cands = [(val[l, noise][0], l) for l in labels if val.get((l, noise)) and test.get((l, noise))]
      if not cands:
        cells.append("")
        continue
      _, best = max(cands)
      m, s, _ = test[best, noise]
      cells.append(f"{best}: {m:.2f} ± {s:.2f}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines + [""]


def _curves(rows, loss, noise, key):
  """Per-epoch metric of one cell: mean over its replicas (seeds), whichever runs hold them."""
  from experiments import records  # local: the report stays importable without the training stack

  cell = [
    r for r in rows if r["loss"] == loss and _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) == noise
  ]
  series = []
  for r in cell:
    if not os.path.exists(os.path.join(r["_dir"], "metrics.jsonl")):
      continue
    hist = records.read_history(r["_dir"])
    series.append([np.asarray(h[key], np.float64)[r["_index"]] if h.get(key) is not None else np.nan for h in hist])
  if not series:
    return None
  n = min(len(x) for x in series)
  with warnings.catch_warnings():  # an all-NaN cell (e.g. memorisation without noisy labels) stays NaN
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(np.asarray([np.asarray(x[:n], np.float64) for x in series]), 0)


def _styles(losses):
  """Colour, line style and marker per row: tab10's ten hues, then the next ten dashed, and so on, with
  markers cycling independently, so no two of up to 40 rows look alike (tab20's paired shades did)."""
  import matplotlib.pyplot as plt

  markers = "osD^v<>ph*"
  return {
    l: dict(color=plt.cm.tab10(i % 10), ls=("-", "--", "-.", ":")[(i // 10) % 4], marker=markers[(i * 3) % 10])
    for i, l in enumerate(losses)
  }


def _plots(workdir, rows, losses, noises) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  style = _styles(losses)

  # 1. Test accuracy vs noise rate, one panel per noise kind; ticks give the nominal and realised rate.
  kinds = sorted({r["noise_kind"] for r in rows})
  fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
  for ax, kind in zip(axes[0], kinds):
    for loss in losses:
      pts = sorted({r["noise_rate"] for r in rows if r["loss"] == loss and r["noise_kind"] == kind})
      keep = []
      for x in pts:
        y = [
          r["test_accuracy_last"]
          for r in rows
          if r["loss"] == loss
          and r["noise_kind"] == kind
          and r["noise_rate"] == x
          and r["test_accuracy_last"] is not None
        ]
        if y:
          keep.append((x, 100 * np.mean(y), 100 * np.std(y)))
      if keep:
        x, m, sd = map(np.asarray, zip(*keep))
        ax.errorbar(x, m, yerr=sd, label=loss, ms=3, capsize=2, **style[loss])
    ticks = sorted({r["noise_rate"] for r in rows if r["noise_kind"] == kind})
    ax.set_xticks(ticks, [f"{t:g}\n({realised(rows, _noise_label({'kind': kind, 'rate': t})):.2f})" for t in ticks])
    ax.set(title=f"{kind} noise", xlabel="noise rate η: nominal (realised)", ylabel="test accuracy (%, last epoch)")
    ax.grid(alpha=0.3)
  if axes[0][-1].get_legend_handles_labels()[0]:  # nothing to label when every cell diverged
    axes[0][-1].legend(fontsize=7, loc="lower left", ncol=2)
  paths.append(_save(fig, out_dir, "accuracy_vs_noise.png"))

  # 2. Test-accuracy curves per epoch (as TCE Fig. 2), 3. memorisation, 4. clipped fraction: per noise.
  specs = [
    ("test_accuracy_curves.png", [("test_accuracy", "-")], "test accuracy (%)"),
    (
      "memorisation.png",
      [("train_memorised_noisy_subset", "-"), ("train_accuracy_clean_subset", ":")],
      "train accuracy (%): noisy subset fitted to its noisy label (—) / clean subset (···)",
    ),
    ("clipped_fraction.png", [("clipped_fraction", "-")], "examples clipped (% of the batch)"),
  ]
  names = {r["loss"]: r["loss_name"] for r in rows}
  for fname, keys, ylabel in specs:
    shown = [l for l in losses if l in names and (fname != "clipped_fraction.png" or "clip" in names[l])]
    panels = [n for n in noises if any(_cell_values(rows, l, n, "seed") for l in shown)]
    if not shown or not panels:
      continue
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.4 * nrow), squeeze=False, layout="constrained")
    for ax, noise in zip(axes.flat, panels):
      for loss in shown:
        for key, ls in keys:
          ys = _curves(rows, loss, noise, key)
          if ys is not None and len(ys):
            st = dict(style[loss], ls=ls if ls != "-" else style[loss]["ls"], marker=None)
            ax.plot(np.arange(1, len(ys) + 1), 100 * ys, label=loss if ls == "-" else None, lw=1.2, **st)
      ax.set(title=heading(rows, noise), xlabel="epoch")
      ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
      ax.axis("off")
    fig.supylabel(ylabel, fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    paths.append(_save(fig, out_dir, fname))
  return paths


def _last(rows, loss, noise, key):
  ys = _curves(rows, loss, noise, key)
  return None if ys is None or not len(ys) else float(ys[-1])


def diagnostics(rows, losses, noises) -> dict:
  """{loss label: {noise: (clipped fraction, precision, recall, flipped fraction)}} at the last epoch, for
  the rows that clipped anything: how well the clipped set finds the labels the noise model flipped."""
  out = {}
  for loss in losses:
    for noise in noises:
      if not _cell_values(rows, loss, noise, "seed"):
        continue
      vals = tuple(
        _last(rows, loss, noise, k)
        for k in ("clipped_fraction", "clipped_precision", "clipped_recall", "noisy_fraction")
      )
      if vals[0] is not None:
        out.setdefault(loss, {})[noise] = vals
  return {loss: cells for loss, cells in out.items() if any(c[0] > 0 for c in cells.values())}


def _diagnostics_table(diag, rows, noises) -> list[str]:
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
    "| loss | " + " | ".join(heading(rows, n) for n in noises) + " | corr |",
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

  stats = _stats(rows, losses, noises, "test_accuracy_last")
  grid = np.full((len(losses), len(noises)), np.nan)
  for (loss, noise), st in stats.items():
    if st is not None:
      grid[losses.index(loss), noises.index(noise)] = st[0]
  fig, ax = plt.subplots(figsize=(1.1 * len(noises) + 3, 0.32 * len(losses) + 1.5), layout="constrained")
  cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
  im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
  ax.set_xticks(range(len(noises)), [heading(rows, n) for n in noises], rotation=30, ha="right", fontsize=8)
  ax.set_yticks(range(len(losses)), losses, fontsize=8)
  for (i, j), v in np.ndenumerate(grid):
    if np.isfinite(v):
      ax.text(
        j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if v < np.nanmean(grid) else "black"
      )
    elif stats.get((losses[i], noises[j]), 0) is None:  # a diverged cell says so; an untrained one stays empty
      ax.text(j, i, "diverged", ha="center", va="center", fontsize=6, color="darkred")
  fig.colorbar(im, ax=ax, label="test accuracy (%, last epoch, mean over seeds)")
  return _save(fig, out_dir, "accuracy_heatmap.png")


def _diagnostics_plot(diag, out_dir) -> str:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
  style = _styles(list(diag))
  for loss, cells in diag.items():
    c = 100 * np.array([v for v in cells.values()], np.float64)
    st = dict(style[loss], ls="none")
    axes[0].plot(c[:, 3], c[:, 0], label=loss, **st)
    axes[1].plot(c[:, 2], c[:, 1], label=loss, **st)
  axes[0].plot([0, 100], [0, 100], "k:", lw=0.8)
  axes[0].set(
    xlabel="flipped labels (% of the batches)", ylabel="clipped (% of the batches)", title="clipping vs noise"
  )
  axes[1].set(
    xlabel="recall (% of flipped labels clipped)",
    ylabel="precision (% of clipped that were flipped)",
    title="clipped set as a noise detector",
    xlim=(0, 100),
    ylim=(0, 100),
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


def _config_section(table_rows) -> list[str]:
  """The configuration every number above came from: each row's loss and overrides, and the shared base."""
  out = [
    "## Configuration",
    "",
    "Every cell above was produced by (and checked against) this configuration.",
    "",
    "| row | loss | hyperparameters and overrides |",
    "|---|---|---|",
  ]
  for row in table_rows:
    loss = {k: v for k, v in row["config"].loss.items() if k != "name" and v is not None}
    extra = ", ".join(
      [f"{k}={v}" for k, v in loss.items()] + [f"{k}={v}" for k, v in row["loss"].get("overrides", {}).items()]
    )
    out.append(f"| {row['loss']['label']} | `{row['config'].loss.name}` | {extra or '(defaults)'} |")
  base = json.loads(table_rows[0]["config"].to_json()) if table_rows else {}
  shared = ", ".join(f"{k}={v}" for k, v in sorted(base.items()) if k not in ("loss", "noise", "seed", "num_seeds"))
  return out + ["", f"Base training config (all rows): {shared}", ""]


def tables(rows, losses, noises) -> list[str]:
  """The accuracy tables of results.md: the selected epoch first when a noisy validation split chose one,
  then the last epoch, then the best epoch (the optimistic oracle when it was picked on the test set)."""
  has_selected = any(r.get("test_accuracy_selected") is not None for r in rows)
  oracle = all(r["_select_by"] == "test_accuracy" for r in rows)
  md = []
  if has_selected:
    md += [
      "## Selected epoch (noisy validation)",
      "",
      "Test accuracy at the epoch with the best accuracy on a held-out split of the noisy training labels "
      "(no clean label used).",
      "",
      *_table(rows, losses, noises, "test_accuracy_selected"),
      "",
    ]
  md += ["## Last epoch", "", *_table(rows, losses, noises, "test_accuracy_last"), ""]
  if oracle:
    md += [
      "## Best test epoch (optimistic oracle)",
      "",
      "The epoch with the best test accuracy, picked on the test set itself: an upper bound no method can "
      "select without clean test labels (as reported by many noisy-label papers).",
      "",
    ]
  else:
    md += ["## Best epoch (clean validation)", "", "The epoch picked on the clean validation hold-out.", ""]
  md += [*_table(rows, losses, noises, "test_accuracy_best"), ""]
  if has_selected:
    md += _chosen_table(rows, losses, noises)
  return md


LEGEND = (
  "Test accuracy (%), mean ± std over seeds. Column headings: nominal noise setting (realised share of "
  "flipped training labels). **Bold**: better than CE at the same noise by more than both cells' seed std "
  "added, and above chance (100/K %) by more than its own std. `diverged`: the run stopped on a non-finite "
  "loss (or skipped too many steps). Metrics: docs/METRICS.md."
)


def render(rows, losses, noises, title, grid_size=None) -> list[str]:
  cells = {(r["loss"], r["noise_kind"], r["noise_rate"]) for r in rows}
  seeds = sorted({r["seed"] for r in rows})
  size = f"{len(cells)}/{grid_size} cells" if grid_size else f"{len(cells)} cells"
  md = [f"# {title} ({size}, seeds {seeds})", "", LEGEND, ""]
  md += tables(rows, losses, noises)
  return md


def _write_csv(path, rows) -> None:
  with open(path + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  os.replace(path + ".tmp", path)


def write(workdir: str, table_rows: list[dict]) -> dict:
  """results.csv, results.md and plots/ of a sweep's workdir, over every finished replica in it whose
  config is one of `table_rows` (sweep.rows(..., selected=False): the whole grid)."""
  rows = collect(workdir, table_rows)
  present = {(r["loss"], _noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]})) for r in rows}
  losses = [t["loss"]["label"] for t in table_rows if any(p[0] == t["loss"]["label"] for p in present)]
  all_noises = list(dict.fromkeys(_noise_label(n) for t in table_rows for n in t["noises"]))
  noises = [n for n in all_noises if any(p[1] == n for p in present)]
  csv_path = os.path.join(workdir, "results.csv")
  _write_csv(csv_path, rows)
  md = render(rows, losses, noises, "Sweep results", len(table_rows) * len(all_noises))
  diag = diagnostics(rows, losses, noises)
  md += _diagnostics_table(diag, rows, noises)
  md += _config_section([t for t in table_rows if t["loss"]["label"] in losses])
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  plots = _plots(workdir, rows, losses, noises) if rows else []
  if rows:
    plots.append(_heatmap(rows, losses, noises, os.path.join(workdir, "plots")))
  if diag:
    plots.append(_diagnostics_plot(diag, os.path.join(workdir, "plots")))
  return {"csv": csv_path, "md": md_path, "plots": plots}


# ---------------------------------------------------------------------------------------------- the CLI
def _describe(config: dict) -> str:
  """'tamed_cross_entropy(alpha=2.0)': a run's loss as its row label."""
  hp = ", ".join(f"{k}={v}" for k, v in config["loss"].items() if k != "name" and v is not None)
  return f"{config['loss']['name']}({hp})" if hp else config["loss"]["name"]


def collect_dirs(paths: list[str]) -> list[dict]:
  """Replica rows of any run directories (a directory holding runs/ is read as a sweep: all its runs)."""
  dirs = []
  for p in paths:
    sub = os.path.join(p, "runs")
    if os.path.isdir(sub) and not os.path.exists(os.path.join(p, "summary.json")):
      dirs += sorted(os.path.join(sub, d) for d in os.listdir(sub) if ".old-" not in d)
    else:
      dirs.append(p)
  rows, labels = [], {}
  for d in dirs:
    path = os.path.join(d, "summary.json")
    if not os.path.exists(path):
      print(f"{d}: no summary.json (not finished); left out", file=sys.stderr)
      continue
    with open(path) as f:
      s = json.load(f)
    if s.get("status") not in DONE:
      print(f"{d}: status {s.get('status')!r}; left out", file=sys.stderr)
      continue
    # Runs of one loss description with different training configs get their directory in the label.
    label = _describe(s["config"])
    conf = json.dumps({k: v for k, v in s["config"].items() if k not in ("seed", "num_seeds", "noise")}, sort_keys=True)
    if labels.setdefault(label, conf) != conf:
      label = f"{label} [{os.path.basename(os.path.normpath(d))}]"
    rows += _replica_rows(label, s["config"]["loss"]["name"], os.path.basename(os.path.normpath(d)), d, s)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m experiments.report",
    description="Tables (test accuracy %, mean ± std over seeds) of run directories.",
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or sweep workdirs (with runs/)")
  parser.add_argument("--out", help="write the markdown here (default: print it)")
  parser.add_argument("--csv", help="also write one row per replica to this CSV file")
  args = parser.parse_args(argv)
  missing = [d for d in args.run_dirs if not os.path.isdir(d)]
  if missing:
    print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
    return 2
  rows = collect_dirs(args.run_dirs)
  if not rows:
    print(
      "error: no finished run (summary.json with status completed or failed) in the given directories", file=sys.stderr
    )
    return 1
  losses = list(dict.fromkeys(r["loss"] for r in rows))
  noises = list(dict.fromkeys(_noise_label({"kind": r["noise_kind"], "rate": r["noise_rate"]}) for r in rows))
  md = "\n".join(render(rows, losses, noises, "Results"))
  if args.out:
    with open(args.out, "w") as f:
      f.write(md)
    print(f"wrote {args.out}")
  else:
    print(md)
  if args.csv:
    _write_csv(args.csv, rows)
    print(f"wrote {args.csv}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
