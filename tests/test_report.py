"""results.md as a reader meets it: realised noise beside nominal, the bold rule, diverged cells, and the
noisy-validation tables (issue 21's summary keys), on hand-built summaries of the shape records.summarise
writes."""

import numpy as np

from experiments import report


def _summary(cells, status="completed", selected=True, num_classes=10):
  """cells: [(kind, rate, seed, last, best, realised, val_sel, test_sel)] -> a summary.json dict."""
  reps = []
  for kind, rate, seed, last, best, realised, val_sel, test_sel in cells:
    p = {
      "replica": f"{kind}:{rate:g}/seed{seed}",
      "seed": seed,
      "noise_kind": kind,
      "noise_rate": rate,
      "test_accuracy_last": last,
      "test_accuracy_best": best,
      "best_epoch": 3,
      "noise_rate_realised": realised,
      "noise": {"class_counts": [100] * num_classes},
    }
    if selected:
      p.update(selected_epoch=2, val_accuracy_selected=val_sel, test_accuracy_selected=test_sel)
    reps.append(p)
  return {"status": status, "train_seconds": 8.0, "best_epoch_selected_by": "test_accuracy", "replicas": reps}


def _rows(label, name, cells, **kw):
  return report._replica_rows(label, name, label, "/nonexistent", _summary(cells, **kw))


def _cells(acc, spread=0.002, val=None, test=None, realised=0.2):
  # Two seeds at 'asymmetric 0.4' (realised 0.2: only some classes flip), accuracies acc ± spread.
  return [
    ("asymmetric", 0.4, s, acc + d, acc + d + 0.01, realised, (val or acc) + d, (test or acc) + d)
    for s, d in ((0, -spread), (1, spread))
  ]


def test_headings_show_realised_rate_and_bold_only_beats_ce_beyond_spread():
  # Fails with the old report: it bolded the column's best mean whatever CE's spread and chance level were,
  # and headed the column 'asymmetric 0.4' although 0.2 of the labels were flipped.
  rows = (
    _rows("CE", "softmax_cross_entropy", _cells(0.80, spread=0.01))
    + _rows("MAE", "mean_absolute_error", _cells(0.81, spread=0.01))  # within the spread: not bold
    + _rows("GCE", "generalized_cross_entropy", _cells(0.90))  # clearly better: bold
  )
  md = "\n".join(report._table(rows, ["CE", "MAE", "GCE"], ["asymmetric 0.4"], "test_accuracy_last"))
  assert "| loss | asymmetric 0.4 (0.20) |" in md
  assert "| GCE | **90.00 ± 0.20** |" in md and "| MAE | 81.00 ± 1.00 |" in md and "| CE | 80.00 ± 1.00 |" in md


def test_chance_level_cell_is_never_bold_and_diverged_is_labelled():
  # CE at 5% (below chance 10%), a loss at chance (10%): better than CE, yet never bold.
  rows = (
    _rows("CE", "softmax_cross_entropy", _cells(0.05, spread=0.001))
    + _rows("MAE", "mean_absolute_error", _cells(0.1, spread=0.001))
    + _rows("TCE", "tamed_cross_entropy", _cells(0.5), status="failed")
  )
  md = "\n".join(report._table(rows, ["CE", "MAE", "TCE"], ["asymmetric 0.4"], "test_accuracy_last"))
  assert "**" not in md and "| TCE | diverged |" in md


def test_noisy_validation_tables_come_first_and_pick_by_noisy_val():
  # Two TCE rows (one family): α=2 has the better noisy-validation accuracy but the worse test accuracy at its
  # selected epoch; the 'chosen' table must pick α=2 by validation and show its test accuracy.
  rows = (
    _rows("CE", "softmax_cross_entropy", _cells(0.70))
    + _rows("TCE α=1", "tamed_cross_entropy", _cells(0.8, val=0.50, test=0.85))
    + _rows("TCE α=2", "tamed_cross_entropy", _cells(0.8, val=0.60, test=0.75))
  )
  md = "\n".join(report.render(rows, ["CE", "TCE α=1", "TCE α=2"], ["asymmetric 0.4"], "Results"))
  sel, last, oracle = (md.index(h) for h in ("Selected epoch (noisy validation)", "## Last epoch", "optimistic oracle"))
  assert sel < last < oracle
  chosen = md[md.index("## Chosen by noisy validation") :]
  assert "| tamed_cross_entropy | TCE α=2: 75.00 ± 0.20 |" in chosen and "softmax_cross_entropy" not in chosen


def test_without_selection_keys_there_is_no_selected_table():
  rows = _rows("CE", "softmax_cross_entropy", _cells(0.7), selected=False)
  md = "\n".join(report.render(rows, ["CE"], ["asymmetric 0.4"], "Results"))
  assert "Selected epoch" not in md and "Chosen by noisy validation" not in md and "## Last epoch" in md


def test_csv_time_column_sums_to_the_run_time():
  rows = _rows("CE", "softmax_cross_entropy", _cells(0.7))
  assert np.isclose(sum(r["train_seconds_share"] for r in rows), 8.0)


def test_heatmap_labels_diverged_cells(tmp_path, monkeypatch):
  # Fails with the old heatmap, which left a diverged cell blank (indistinguishable from an untrained one).
  import matplotlib

  matplotlib.use("Agg")
  figures = []
  monkeypatch.setattr(report, "_save", lambda fig, out_dir, name: figures.append(fig) or name)
  rows = _rows("CE", "softmax_cross_entropy", _cells(0.7)) + _rows(
    "TCE", "tamed_cross_entropy", _cells(0.5), status="failed"
  )
  report._heatmap(rows, ["CE", "TCE"], ["asymmetric 0.4"], str(tmp_path))
  texts = [t.get_text() for t in figures[0].axes[0].texts]
  assert texts == ["70.0", "diverged"]
  assert [t.get_text() for t in figures[0].axes[0].get_xticklabels()] == ["asymmetric 0.4 (0.20)"]


def test_row_styles_are_distinguishable():
  # Fails with the old tab20 colours, where CE and the next row got two shades of one blue.
  styles = report._styles([f"row{i}" for i in range(30)])
  looks = [(tuple(np.round(s["color"], 3)), s["ls"]) for s in styles.values()]
  assert len(set(looks)) == 30
  colors = [np.asarray(s["color"][:3]) for s in list(styles.values())[:10]]
  assert min(np.abs(a - b).sum() for i, a in enumerate(colors) for b in colors[i + 1 :]) > 0.2
