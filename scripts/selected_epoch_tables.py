"""Selected-epoch tables of a finished sweep, from its runs' summary.json (until report.py shows them).

  python scripts/selected_epoch_tables.py runs/sweep_digits

Prints, per loss (rows) and noise setting (columns), the test accuracy (%, mean ± std over seeds) at the epoch
selected on the validation split, at the last epoch and at the best-test epoch (an optimistic oracle), each
loss's rank under the three, and per loss the mean gain of selection over the last epoch on the noisy columns.
"""

import csv
import json
import os
import sys

import numpy as np

KEYS = ("test_accuracy_selected", "test_accuracy_last", "test_accuracy_best")


def main(root):
  label = {}
  with open(os.path.join(root, "results.csv")) as f:
    for row in csv.DictReader(f):
      label[row["run"]] = row["loss"]
  runs, cells, settings = list(dict.fromkeys(label)), {}, []
  for run in runs:
    with open(os.path.join(root, "runs", run, "summary.json")) as f:
      summary = json.load(f)
    for entry in summary["settings"]:
      settings += [entry["setting"]] if entry["setting"] not in settings else []
      cells[run, entry["setting"]] = entry
  ranks = {
    k: {st: {r: i + 1 for i, r in enumerate(sorted(runs, key=lambda r: -cells[r, st][k]))} for st in settings}
    for k in KEYS
  }
  for key in KEYS:
    print(f"\n{key} (%)\n\n| loss | " + " | ".join(settings) + " |\n|---|" + "---|" * len(settings))
    for r in runs:
      row = [f"{100 * cells[r, st][key]:.2f} ± {100 * cells[r, st][key + '_std']:.2f}" for st in settings]
      print(f"| {label[r]} | " + " | ".join(row) + " |")
  print("\nrank (selected / last / best-test oracle)\n\n| loss | " + " | ".join(settings) + " | mean |")
  print("|---|" + "---|" * (len(settings) + 1))
  for r in runs:
    row = [" / ".join(str(ranks[k][st][r]) for k in KEYS) for st in settings]
    mean = " / ".join(f"{np.mean([ranks[k][st][r] for st in settings]):.1f}" for k in KEYS)
    print(f"| {label[r]} | " + " | ".join(row) + f" | {mean} |")
  noisy = [st for st in settings if not st.endswith(":0")]
  print("\nmean over the noisy columns (points): selected - last, best-test oracle - selected")
  for r in runs:
    gain = np.mean([100 * (cells[r, st][KEYS[0]] - cells[r, st][KEYS[1]]) for st in noisy])
    gap = np.mean([100 * (cells[r, st][KEYS[2]] - cells[r, st][KEYS[0]]) for st in noisy])
    print(f"  {label[r]}: {gain:+.2f}, {gap:+.2f}")


if __name__ == "__main__":
  main(sys.argv[1])
