"""Runs a grid of losses × noise settings × seeds and writes tables and plots that compare them.

  python -m experiments.sweep --config=configs/sweeps/digits.py --workdir=runs/sweep [--config.key=value ...]

A cell of the table is one loss at one noise setting, over `num_seeds` seeds; each (loss, setting, seed) is
one replica. Replicas train together as vmapped replicas of one compiled program, in one run directory
DIR/runs/<run>/ (with `group_noise`, all noise settings of a loss that still need training), so a run
resumes like any training run.

Sweeps are cumulative: before training, every run directory under DIR/runs is read, and a replica is
trained only if no finished run of the same row config (the loss, its hyperparameters and every training
key; seeds and noise settings aside) holds it already. Adding a noise setting, a seed or a loss therefore
trains only the new replicas; a run that failed (diverged) is moved aside and tried again; a finished run
whose config differs only by a larger `num_epochs` continues from its last checkpoint when the learning-rate
schedule over the finished epochs is unchanged (checkpoints.guard_workdir says why not otherwise).
DIR gets results.csv, results.md and plots/*.png (experiments/report.py) after every run, covering every
finished replica in DIR whose config matches a row of the sweep, whichever subset this invocation ran.
"""

from __future__ import annotations

import copy
import os
import re
import time

import jax
import ml_collections

from experiments import checkpoints, multihost, report, runtime, train
from experiments import settings as run_settings
from experiments.runs import REPLICA_KEYS, differences, noise_label, scan  # noqa: F401 (REPLICA_KEYS: public here)


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_")


def _canonical_noise(text: str) -> str:
  """'symmetric:0.0' and 'symmetric:0' are the same setting."""
  kind, sep, rate = text.partition(":")
  try:
    return f"{kind.strip()}:{float(rate):g}" if sep else text.strip()
  except ValueError:
    return text.strip()


def _selected(items, only: str, key, canonical=str.strip):
  if not only:
    return list(items)
  wanted = [canonical(w) for w in only.split(",") if w.strip()]
  chosen = [it for it in items if key(it) in wanted]
  missing = sorted(set(wanted) - {key(it) for it in chosen})
  if missing:
    raise ValueError(f"{missing} not in the grid; valid choices: {[key(it) for it in items]}")
  return chosen


def rows(sweep: ml_collections.ConfigDict, selected: bool = True) -> list[dict]:
  """The table's rows {loss, noises, config, together}: each loss with its config (seed = sweep.seed,
  num_seeds = sweep.num_seeds) and the noise settings it is run at. `selected`: only_losses / only_noise
  applied (what this invocation trains); otherwise the whole grid (what the report covers)."""
  commas = [l["label"] for l in sweep.losses if "," in l["label"]]
  if commas:  # only_losses is a comma-separated list of labels
    raise ValueError(f"loss labels must not contain ',': {commas}")
  losses = _selected(sweep.losses, sweep.only_losses if selected else "", lambda l: l["label"])
  noises = _selected(sweep.noise, sweep.only_noise if selected else "", noise_label, _canonical_noise)
  noises = [{"kind": n["kind"], "rate": float(n["rate"])} for n in noises]
  labels = [l["label"] for l in sweep.losses]
  if len(set(labels)) != len(labels):
    raise ValueError(f"loss labels must be unique; got {labels}")
  out = []
  for loss in losses:
    config = copy.deepcopy(sweep.base)
    config.seed = sweep.seed
    config.num_seeds = sweep.num_seeds
    config.loss.name = loss["name"]
    for hp in config.loss:  # a row's loss is exactly its entry, whatever loss the base config had
      if hp != "name":
        config.loss[hp] = None
    for hp, value in loss.get("hparams", {}).items():
      if hp not in config.loss:
        raise ValueError(f"loss {loss['label']!r}: unknown hyperparameter {hp!r}")
      config.loss[hp] = value
    for key, value in {**loss.get("overrides", {}), **sweep.base_overrides}.items():
      _override(config, key, value, loss["label"])
    # A loss that takes inputs from the noise model (the transition matrix) trains one setting per run.
    together = bool(sweep.group_noise) and not run_settings.noise_inputs(config)
    for n in noises if selected else ():  # the rows this invocation trains; the others only label the report
      run_settings.validate_static(config, [n])
    out.append({"loss": dict(loss), "noises": noises, "config": config, "together": together})
  return out


def expand(sweep: ml_collections.ConfigDict) -> list[dict]:
  """The runs {id, loss, noises, config} that train the selected grid in an empty workdir, in table order
  (loss-major). Everything is validated here, before anything is trained or compiled."""
  return plan(sweep, None)


def _extends(stored: dict, config) -> bool:
  """The run differs from the row only by a larger num_epochs: continued, not retrained."""
  diff = differences(stored, config)
  return len(diff) == 1 and diff[0].startswith("num_epochs:") and stored["num_epochs"] < config.num_epochs


def _run_id(row, noises, seeds, taken) -> str:
  base = slug(row["loss"]["label"])
  if [noise_label(n) for n in noises] != [noise_label(n) for n in row["noises"]]:
    base += "__" + "__".join(slug(noise_label(n)) for n in noises)
  if seeds != list(range(row["config"].seed, row["config"].seed + row["config"].num_seeds)):
    base += f"__seeds{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"__seed{seeds[0]}"
  run_id, i = base, 2
  while run_id in taken:  # a directory of other replicas (or another config) has this name
    run_id, i = f"{base}_{i}", i + 1
  return run_id


def _blocks(seeds: list[int]) -> list[list[int]]:
  """Consecutive runs of seeds (a run trains seeds seed..seed+num_seeds-1)."""
  out = []
  for s in sorted(seeds):
    if out and s == out[-1][-1] + 1:
      out[-1].append(s)
    else:
      out.append([s])
  return out


def plan(sweep: ml_collections.ConfigDict, workdir: str | None, verbose: bool = False) -> list[dict]:
  """The runs to train so that every selected (loss, setting, seed) replica is held by a finished run:
  unfinished runs of a matching config are resumed, finished ones kept, failed ones moved aside and
  retried, and the missing replicas grouped into new runs (settings with the same missing seeds together
  when the row allows, consecutive seeds together)."""
  existing = scan(workdir)
  taken = {d["id"] for d in existing}
  runs = []
  for row in rows(sweep):
    config = row["config"]
    seeds = list(range(config.seed, config.seed + config.num_seeds))
    wanted = [(noise_label(n), s) for n in row["noises"] for s in seeds]
    covered = set()
    for d in existing:
      if d["status"] == "failed" and not differences(d["stored"], config) and set(d["replicas"]) & set(wanted):
        moved = checkpoints.move_aside(d["dir"])
        taken.discard(d["id"])
        d["status"] = "moved"
        if verbose:
          print(
            f"{d['id']}: failed last time ({(d['summary'] or {}).get('error') or 'no error recorded'}); moved to "
            f"{moved} and tried again"
          )
    for d in existing:
      if d["status"] == "completed" and not differences(d["stored"], config):
        covered |= set(d["replicas"])
    for d in existing:  # unfinished runs of this row (or shorter ones to continue) hold their replicas
      if d["status"] == "moved" or set(d["replicas"]) & covered or not set(d["replicas"]) <= set(wanted):
        continue
      if (
        (d["status"] is None or d["status"] == "interrupted")
        and not differences(d["stored"], config)
        or (d["status"] in (None, "interrupted", "completed") and _extends(d["stored"], config))
      ):
        runs.append(_run(row, d["id"], d["noises"], d["stored"]["seed"], d["stored"]["num_seeds"]))
        covered |= set(d["replicas"])
    missing: dict[str, list[int]] = {}
    for label, seed in wanted:
      if (label, seed) not in covered:
        missing.setdefault(label, []).append(seed)
    groups: dict[tuple, list[dict]] = {}
    for n in row["noises"]:
      if noise_label(n) in missing:
        key = tuple(missing[noise_label(n)]) if row["together"] else (noise_label(n), *missing[noise_label(n)])
        groups.setdefault(key, []).append(n)
    for key, noises in groups.items():
      for block in _blocks(missing[noise_label(noises[0])]):
        run_id = _run_id(row, noises, block, taken)
        taken.add(run_id)
        runs.append(_run(row, run_id, noises, block[0], len(block)))
  return runs


def _run(row, run_id, noises, seed, num_seeds) -> dict:
  config = copy.deepcopy(row["config"])
  config.seed, config.num_seeds = seed, num_seeds
  return {"id": run_id, "loss": row["loss"], "noises": noises, "config": config}


def _override(config, key, value, label, prefix=""):
  """config[key] = value; a dict value for a sub-config ({'data': {'augment': 'none'}}) sets its keys."""
  if key not in config:
    raise ValueError(f"loss {label!r}: override of unknown config key {prefix + key!r}")
  if isinstance(config[key], ml_collections.ConfigDict) and hasattr(value, "items"):
    for k, v in value.items():
      _override(config[key], k, v, label, f"{prefix}{key}.")
  else:
    config[key] = value


def _belongs(run_id: str, row) -> bool:
  """Whether a run directory is named after this row (plan's names: the label's slug, then '_<n>' or '__')."""
  return re.fullmatch(re.escape(slug(row["loss"]["label"])) + r"(_\d+)?(__.*)?", run_id) is not None


def _changed_runs(sweep, workdir) -> list[dict]:
  """Runs named after a selected row that hold some of its replicas but were trained with another config
  (and cannot be continued to it): with rerun_changed they are moved aside and their replicas retrained,
  otherwise the sweep stops with an error naming the differing keys."""
  out = []
  table = rows(sweep, selected=False)
  existing = scan(workdir)
  for row in rows(sweep):
    c = row["config"]
    wanted = {(noise_label(n), s) for n in row["noises"] for s in range(c.seed, c.seed + c.num_seeds)}
    for d in existing:
      if not _belongs(d["id"], row) or not set(d["replicas"]) & wanted:
        continue
      if any(not differences(d["stored"], other["config"]) for other in table):
        continue  # the run of another row whose label shares this prefix, or this row's own
      diff = differences(d["stored"], c)
      why = checkpoints.extension_problem(d["dir"], d["stored"], c) if _extends(d["stored"], c) else "x"
      if why is not None:
        reason = "" if why == "x" else f" (cannot be continued: {why})"
        out.append({"id": d["id"], "dir": d["dir"], "diff": ", ".join(diff[:6]) + reason})
  return out


def check_changed(sweep: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses (ConfigMismatchError naming the differing keys) run directories of the sweep's rows trained
  with another config, or with `rerun_changed` moves them aside (renamed, never deleted) to be retrained."""
  changed = _changed_runs(sweep, workdir)
  if changed and not sweep.rerun_changed:
    raise checkpoints.ConfigMismatchError(
      f"{len(changed)} run(s) in {workdir} were run with a different config than this sweep's:\n"
      + "\n".join(f"  {c['id']}: {c['diff']}" for c in changed)
      + "\nUse a new --workdir, or --config.rerun_changed=True to move those runs aside "
      "(renamed, never deleted) and run them again."
    )
  for c in changed:
    print(f"{c['id']}: config changed ({c['diff']}); previous run moved to {checkpoints.move_aside(c['dir'])}")


def run(sweep: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  # In a multi-process sweep process 0 alone changes the workdir (moves runs aside, writes the tables): two
  # processes moving one directory, or one reading a summary.json the other is writing, would fail. The
  # others plan from what process 0 left, and every process must train the same runs in the same order.
  lead = jax.process_index() == 0
  runs = []
  if lead:
    check_changed(sweep, workdir)
    runs = plan(sweep, workdir, verbose=True)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "sweep_config.json"), "w") as f:
      f.write(sweep.to_json(indent=2))
    done = sum(len(d["replicas"]) for d in scan(workdir) if d["status"] == "completed")
    print(f"{len(runs)} run(s) to train; {done} finished replica(s) already in {workdir}")
  multihost.barrier("sweep_planned")
  if not lead:
    runs = plan(sweep, workdir)
  planned = multihost.Agreement("sweep_plan").gather(" ".join(r["id"] for r in runs))
  if len(set(planned)) > 1:
    raise RuntimeError(f"the processes planned different runs ({planned}): is {workdir} on a disk they all share?")
  t0 = time.time()
  table_rows = rows(sweep, selected=False)
  for i, r in enumerate(runs, 1):
    run_dir = os.path.join(workdir, "runs", r["id"])
    if lead:
      print(
        f"[{i}/{len(runs)}] {r['id']}: {', '.join(noise_label(n) for n in r['noises'])} × seeds "
        f"{r['config'].seed}..{r['config'].seed + r['config'].num_seeds - 1} ({time.time() - t0:.0f}s into this "
        "sweep)",
        flush=True,
      )
    try:
      train.train_and_evaluate(r["config"], run_dir, r["noises"])
    except train.NonFiniteError as e:
      # A loss that diverges is a result, not a crash of the sweep: recorded as failed in its summary (and
      # tried again by the next invocation).
      if lead:
        print(f"  {r['id']} failed: {e}")
    if lead:
      report.write(workdir, table_rows)
  if lead:
    paths = report.write(workdir, table_rows)
    print(
      f"\nSweep finished in {time.time() - t0:.0f}s.\n  table: {paths['md']}\n  csv:   {paths['csv']}\n"
      f"  plots: {', '.join(paths['plots'])}"
    )
  return runs


if __name__ == "__main__":
  runtime.cli(run, "Sweep config file.")
