"""Markdown table of the label audit's precision at k (= recall at k, k = flipped labels) of a sweep.

  python scripts/label_audit_table.py runs/clipping_issue20

Reads every DIR/runs/*/summary.json (experiments/audit.py writes the per-setting means over seeds) and prints
one row per loss (the sweep's label) and one column per noise setting, in %.
"""

import glob
import json
import os
import sys


def main(sweep_dir: str) -> None:
  config = json.load(open(os.path.join(sweep_dir, "sweep_config.json")))
  table, columns = {}, []
  for path in sorted(glob.glob(os.path.join(sweep_dir, "runs", "*", "summary.json"))):
    summary = json.load(open(path))
    run = os.path.basename(os.path.dirname(path))
    label = next((l["label"] for l in config["losses"] if run.split("__")[0] == _slug(l["label"])), run)
    for s in summary["settings"]:
      if "label_audit_precision_at_k" in s:
        table.setdefault(label, {})[s["setting"]] = 100 * s["label_audit_precision_at_k"]
        if s["setting"] not in columns:
          columns.append(s["setting"])
  order = [l["label"] for l in config["losses"] if l["label"] in table]
  print("| loss | " + " | ".join(columns) + " |")
  print("|---" * (len(columns) + 1) + "|")
  for label in order:
    print(f"| {label} | " + " | ".join(f"{table[label][c]:.1f}" if c in table[label] else "" for c in columns) + " |")


def _slug(text):
  import re

  return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")


if __name__ == "__main__":
  main(sys.argv[1])
