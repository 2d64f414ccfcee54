"""Shared helpers of the benchmarks: interleaved timing, machine description, tables, docs sections.

The machine these numbers come from is small and shared (2 CPU cores, other jobs running), so absolute
times drift by tens of percent within a minute. Every benchmark therefore reports *ratios* between
variants measured side by side: `interleaved` runs one repeat of every variant in turn (rotating the
order), so slow phases of the machine hit all variants alike, and the median over repeats is kept.

Nothing here imports JAX at module level: some benchmarks must set XLA_FLAGS before JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs", "PERFORMANCE.md")
_USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")  # as given by the user, before set_host_devices


def block(x):
  """Waits for every JAX array in `x` (no-op for anything else); returns `x`."""
  import jax

  for leaf in jax.tree.leaves(x):
    if hasattr(leaf, "block_until_ready"):
      leaf.block_until_ready()
  return x


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
  """Median seconds per call of each zero-argument function, measured in interleaved rounds.

  Each function must itself wait for its result (e.g. end with `block`). `warmup` untimed rounds first
  (compilation, caches); then `repeats` rounds, each timing every function once, in an order rotated by
  one per round so that no variant is always first after a pause.
  """
  names = list(fns)
  for _ in range(warmup):
    for name in names:
      fns[name]()
  times = {name: [] for name in names}
  for r in range(repeats):
    k = r % len(names)
    for name in names[k:] + names[:k]:
      t0 = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(ts) for name, ts in times.items()}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  return interleaved({"f": fn}, repeats, warmup)["f"]


# --------------------------------------------------------------------------------------- environment
def machine() -> dict:
  """CPU model, core count, device count and library versions (imports jax, so call it after setup)."""
  info = {"python": platform.python_version()}
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    info["cpu"] = fields.get("Model name", "?").strip()
    info["cores"] = int(fields.get("CPU(s)", "0").strip() or 0)
  except (OSError, subprocess.CalledProcessError, ValueError):
    info["cpu"], info["cores"] = platform.processor() or "?", os.cpu_count()
  import flax
  import jax

  info.update(
    jax=jax.__version__,
    flax=flax.__version__,
    backend=jax.default_backend(),
    devices=jax.device_count(),
    xla_flags=os.environ.get("XLA_FLAGS", ""),
  )
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    info["torch"] = None
  return info


def machine_line(info: dict) -> str:
  return (
    f"{info['cpu']}, {info['cores']} cores; {info['backend']} backend, {info['devices']} device(s); "
    f"jax {info['jax']}, flax {info['flax']}, torch {info['torch']}, python {info['python']}"
  )


def set_host_devices(n: int) -> None:
  """Asks XLA for `n` simulated CPU devices; must run before JAX is imported."""
  if "jax" in sys.modules:
    raise RuntimeError("set_host_devices must run before jax is imported")
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def run_json(args: list[str], env: dict | None = None, timeout: float = 900) -> dict:
  """Runs `python args...` in a fresh process (fresh XLA flags) and parses the last stdout line as JSON."""
  full_env = dict(os.environ, **(env or {}))
  proc = subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout
  )
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
  return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- output
def table(headers: list[str], rows: list[list]) -> str:
  """A Markdown table; floats are printed with 3 significant digits."""
  fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def parser(description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test, < 60 s)")
  p.add_argument("--json", default=None, help="also write the results to this JSON file")
  p.add_argument(
    "--write-docs",
    nargs="?",
    const=DOCS,
    default=None,
    metavar="PATH",
    help=f"replace this benchmark's section of PATH (default {os.path.relpath(DOCS, REPO)})",
  )
  return p


def update_docs(path: str, name: str, markdown: str) -> None:
  """Replaces (or appends) the section between `<!-- bench:name -->` and `<!-- /bench:name -->` of `path`."""
  begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
  block_text = f"{begin}\n{markdown.strip()}\n{end}"
  text = open(path).read() if os.path.exists(path) else "# Performance\n"
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
  text = pattern.sub(lambda _: block_text, text) if pattern.search(text) else text.rstrip() + "\n\n" + block_text + "\n"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def write_json(path: str | None, obj) -> None:
  if path:
    with open(path, "w") as f:
      json.dump(obj, f, indent=2)


def command(argv: list[str] | None = None) -> str:
  """The command line that produced a result, for the docs (XLA_FLAGS included when set by the user)."""
  argv = sys.argv if argv is None else argv
  module = os.path.splitext(os.path.relpath(os.path.abspath(argv[0]), REPO))[0].replace(os.sep, ".")
  args, rest = [], list(argv[1:])
  while rest:
    a = rest.pop(0)
    if a == "--write-docs":
      if rest and not rest[0].startswith("-"):
        rest.pop(0)
    elif not a.startswith("--write-docs="):
      args.append(a)
  env = f"XLA_FLAGS='{_USER_XLA_FLAGS}'" if _USER_XLA_FLAGS else ""
  return " ".join(filter(None, [env, "python -m", module, *args]))


def report(args, section: str, markdown: str, info: dict) -> None:
  """Prints the result and, with --write-docs, replaces its section of the docs (command and machine)."""
  print(markdown, flush=True)
  if args.write_docs:
    update_docs(args.write_docs, section, f"Command: `{command()}`  \nMachine: {machine_line(info)}\n\n{markdown}")
