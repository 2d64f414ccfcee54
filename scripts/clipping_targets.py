"""Issue 20's targets from a sweep's results.csv: per loss, the last-epoch test accuracy averaged over the
symmetric and pair-flip settings with rates in [0.3, 0.6] (mean over seeds, then over settings), the clean
column, and the gap to the reference row.

  python scripts/clipping_targets.py runs/clipping_issue20

Rows compared: BCE + clipping vs BCE and clipped CE vs CE (target: >= +2 points on the noisy average and within
0.5 on clean), each also against gradient clipping and PHuber-CE; OGC and the oracle are listed beside them.
"""

import csv
import os
import sys
from collections import defaultdict

PAIRS = {"BCE + dyn. clip default wu5": "BCE", "clipped CE default wu5": "CE"}


def main(sweep_dir: str) -> None:
  cells = defaultdict(list)
  order = []
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    for row in csv.DictReader(f):
      if row["status"] != "completed":
        continue
      key = (row["loss"], row["noise_kind"], float(row["noise_rate"]))
      cells[key].append(100 * float(row["test_accuracy_last"]))
      if row["loss"] not in order:
        order.append(row["loss"])
  mean = {k: sum(v) / len(v) for k, v in cells.items()}
  noisy_settings = sorted({(k, r) for (_, k, r) in mean if k in ("symmetric", "pairflip") and 0.3 <= r <= 0.6})
  other = sorted({(k, r) for (_, k, r) in mean if r > 0 and (k, r) not in noisy_settings})
  cols = ", ".join(f"{k} {r:g}" for k, r in noisy_settings)
  print(f"noisy average over: {cols}")
  head = ["loss", "clean", "noisy average", *(f"{k} {r:g}" for k, r in other), "vs its base: noisy / clean"]
  print("| " + " | ".join(head) + " |")
  print("|---" * len(head) + "|")
  summary = {}
  for loss in order:
    if not all((loss, k, r) in mean for k, r in noisy_settings):
      continue
    avg = sum(mean[(loss, k, r)] for k, r in noisy_settings) / len(noisy_settings)
    clean = mean.get((loss, "symmetric", 0.0))
    summary[loss] = (avg, clean)
    rest = [f"{mean[(loss, k, r)]:.2f}" if (loss, k, r) in mean else "" for k, r in other]
    gap = ""
    base = PAIRS.get(loss)
    if base in summary:
      b_avg, b_clean = summary[base]
      gap = f"{avg - b_avg:+.2f} / {clean - b_clean:+.2f}" if clean is not None and b_clean is not None else ""
    row = [loss, "" if clean is None else f"{clean:.2f}", f"{avg:.2f}", *rest, gap]
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
  main(sys.argv[1])
