#!/usr/bin/env python3
"""Runs this repository's training or sweep commands on a Cloud TPU VM or pod slice, with `gcloud`.

  python scripts/tpu_vm.py launch NAME --zone=ZONE --accelerator-type=v4-32 -- \\
      python -m experiments.sweep --config=configs/sweeps/tce_table2.py --workdir=runs/tce2
  python scripts/tpu_vm.py status NAME --zone=ZONE          # every worker: running / exit status, log tail
  python scripts/tpu_vm.py fetch NAME --zone=ZONE --workdir=runs/tce2
  python scripts/tpu_vm.py delete NAME --zone=ZONE

Steps (each also a subcommand; `launch` is up + push + run):
  up      create the TPU VM (or a queued resource with --queued), or reuse it when it already exists;
  push    copy the git tree (committed files with their uncommitted changes; not untracked files) to every
          worker, then on every worker: scripts/setup.sh and `pip install -U -e . "jax[tpu]"`;
  run     start the same command on every worker, in the background (setsid nohup), so a dropped ssh
          connection does not stop it; each worker logs to REMOTE_DIR/logs/TAG.log and records its exit
          status. On a multi-host slice `--config.distributed=True` (train) or `--config.base.distributed=True`
          (sweep) is added, so every host calls jax.distributed.initialize() (experiments/train.py);
  status, logs, stop (SIGTERM: the trainer checkpoints and exits), fetch (a workdir from worker 0), delete.

`--dry-run` prints every command it would run (gcloud, git, tar) and runs none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runtime versions from the Cloud TPU docs ("TPU software versions"), by accelerator generation; any other
# generation needs --runtime-version.
RUNTIME_VERSIONS = {
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
# GCE resource names: lowercase letters, digits and hyphens, starting with a letter, at most 63 characters.
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")  # e.g. us-central2-b, europe-west4-a
ACCELERATOR_RE = re.compile(r"^v[0-9]+[a-z]*-[0-9]+$")  # e.g. v4-8, v5litepod-16, v6e-8
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REMOTE_DIR_RE = re.compile(r"^[A-Za-z0-9_./-]+$")
WORKER_RE = re.compile(r"^([0-9]+|all)$")
READY_POLL_SECONDS = 30


class UsageError(Exception):
  """Bad input: reported with the offending value and what is valid, before anything runs."""


# ------------------------------------------------------------------------------------------------ runner
class Runner:
  """Runs commands, or with dry_run prints them (one line each, shell-quoted) and runs none."""

  def __init__(self, dry_run: bool, out=sys.stdout):
    self.dry_run, self.out = dry_run, out

  def show(self, argv: list[str]) -> None:
    print(("" if self.dry_run else "+ ") + shlex.join(argv), file=self.out, flush=True)

  def note(self, text: str) -> None:
    print(f"# {text}", file=self.out, flush=True)

  def run(self, argv: list[str]) -> None:
    self.show(argv)
    if self.dry_run:
      return
    rc = subprocess.run(argv).returncode
    if rc != 0:
      raise SystemExit(f"tpu_vm: command failed with exit status {rc}: {shlex.join(argv)}")

  def query(self, argv: list[str]) -> subprocess.CompletedProcess | None:
    """A read-only command whose output decides what comes next; None in dry-run (outcome unknown)."""
    self.show(argv)
    if self.dry_run:
      return None
    return subprocess.run(argv, capture_output=True, text=True)


class Gcloud:
  """The gcloud command lines for one TPU VM."""

  def __init__(self, name: str, zone: str, project: str | None, gcloud: str = "gcloud"):
    self.name, self.zone, self.project, self.gcloud = name, zone, project, gcloud

  def _tail(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def tpu(self, verb: str, *args: str) -> list[str]:
    return [self.gcloud, "compute", "tpus", "tpu-vm", verb, *args, *self._tail()]

  def queued(self, verb: str, *args: str) -> list[str]:
    return [self.gcloud, "compute", "tpus", "queued-resources", verb, *args, *self._tail()]

  def ssh(self, worker: str, script: str) -> list[str]:
    return self.tpu("ssh", self.name, f"--worker={worker}", f"--command={script}")

  def scp(self, worker: str, *paths: str, recurse: bool = False) -> list[str]:
    return self.tpu("scp", *paths, f"--worker={worker}", *(["--recurse"] if recurse else []))


# ------------------------------------------------------------------------------------------- validation
def check_name(name: str | None) -> str:
  if not name:
    raise UsageError("missing TPU name: give it as the first argument after the subcommand, e.g. `up my-tpu`")
  if not NAME_RE.match(name):
    raise UsageError(
      f"TPU name {name!r} is not valid: use 1-63 lowercase letters, digits and hyphens, starting with a letter "
      "and not ending with a hyphen"
    )
  return name


def check_zone(zone: str | None) -> str:
  if not zone:
    raise UsageError(
      "missing --zone: the TPU's zone, e.g. --zone=us-central2-b (see `gcloud compute tpus locations list`)"
    )
  if not ZONE_RE.match(zone):
    raise UsageError(f"--zone={zone!r} is not a zone: expected REGION-LETTER such as us-central2-b or europe-west4-a")
  return zone


def check_tag(tag: str) -> str:
  if not TAG_RE.match(tag):
    raise UsageError(f"--tag={tag!r} is not valid: use letters, digits, '_', '.' and '-' (it names the log files)")
  return tag


def check_remote_dir(path: str) -> str:
  if not REMOTE_DIR_RE.match(path):
    raise UsageError(
      f"--remote-dir={path!r} is not valid: use letters, digits, '_', '.', '-' and '/' (relative to the worker's "
      "home directory, or absolute; no '~')"
    )
  return path


def runtime_version(accelerator_type: str, given: str | None) -> str:
  if given:
    return given
  generation = accelerator_type.rsplit("-", 1)[0]
  if generation not in RUNTIME_VERSIONS:
    raise UsageError(
      f"no default runtime version for accelerator type {accelerator_type!r}; pass --runtime-version "
      f"(defaults exist for {sorted(RUNTIME_VERSIONS)})"
    )
  return RUNTIME_VERSIONS[generation]


def shell_words(line: str, comments: bool) -> list[str]:
  """The words of a shell command line, with operators (; & | && || ( )) as words of their own."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  if not comments:
    lexer.commenters = ""
  return list(lexer)


def command_line(argv_command: list[str], string_command: str | None) -> tuple[str, list[str], bool]:
  """The user's command: (one shell command line, its words, whether words may be appended to the line).

  Exactly one form is given. After `--`, every argument is one word, quoted here for the remote shell
  (spaces, quotes and `$` arrive as typed). With --command, the string is a shell command line, run as
  written; a word appended to it would land in a comment or after an operator if it has either.
  """
  if argv_command and string_command is not None:
    raise UsageError("give the command either after `--` or with --command, not both")
  if string_command is not None:
    line = string_command.strip()
    try:
      words, raw = shell_words(line, comments=True), shell_words(line, comments=False)
    except ValueError as e:
      raise UsageError(f"--command {string_command!r} is not a valid shell command line: {e}") from None
    simple = words == raw and not any(w and set(w) <= set(";&|()") for w in words)
  else:
    words, line, simple = list(argv_command), shlex.join(argv_command), True
  if not words:
    raise UsageError(
      "empty command: give the command to run on every worker after `--`, e.g. "
      "`-- python -m experiments.train --config=configs/cifar10.py --workdir=runs/c10`"
    )
  if "\n" in line or "\r" in line:
    raise UsageError(f"the command must be one line; got {line!r}")
  return line, words, simple


def with_distributed(line: str, words: list[str], simple: bool, hosts: int) -> tuple[str, str | None]:
  """Adds the flag that makes every host call jax.distributed.initialize() on a multi-host slice.

  experiments/train.py's init_distributed does so when config.distributed is set; a sweep's runs take it
  from its base config. Returns (command line, the flag added or None).
  """
  if hosts <= 1:
    return line, None
  if any(w in ("experiments.train", "experiments/train.py") for w in words):
    key = "--config.distributed"
  elif any(w in ("experiments.sweep", "experiments/sweep.py") for w in words):
    key = "--config.base.distributed"
  else:
    return line, None
  if any(w == key or w.startswith(key + "=") for w in words):
    return line, None
  if not simple:
    raise UsageError(
      f"the slice has {hosts} hosts and the command has shell operators or a comment, so {key}=True cannot be "
      f"appended safely: add {key}=True to the training/sweep command yourself"
    )
  flag = f"{key}=True"
  return f"{line} {flag}", flag


# --------------------------------------------------------------------------------------- remote scripts
# Whether a pid is a live process (a zombie is not: it has exited and waits for its parent to reap it).
ALIVE = 'alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }'


def run_script(remote_dir: str, tag: str, line: str) -> str:
  """The script every worker runs: start `line` detached from the ssh session, log and exit status per tag."""
  q = shlex.quote
  log, pid, rc = f"logs/{tag}.log", f"logs/{tag}.pid", f"logs/{tag}.rc"
  # The user's line runs in a subshell on lines of its own: a trailing comment cannot swallow the status
  # write, nor an `exit` skip it.
  inner = f". .venv/bin/activate && (\n{line}\n)\necho $? > {rc}"
  return "\n".join(
    [
      "set -eu",
      ALIVE,
      f"cd {q(remote_dir)}",
      "mkdir -p logs",
      f'if [ -f {pid} ] && alive "$(cat {pid})"; then',
      f'  echo "$(hostname): run {tag} is still running (pid $(cat {pid})); stop it first" >&2; exit 1',
      "fi",
      f"rm -f {rc}",
      f"printf '%s\\n' {q(line)} > logs/{tag}.cmd",
      f"setsid nohup bash -c {q(inner)} > {log} 2>&1 < /dev/null &",
      f"echo $! > {pid}",
      f'echo "$(hostname): started {tag} (pid $!), log {remote_dir}/{log}"',
    ]
  )


def status_script(remote_dir: str, tag: str, lines: int) -> str:
  q = shlex.quote
  pid, rc = f"logs/{tag}.pid", f"logs/{tag}.rc"
  return "\n".join(
    [
      'h="$(hostname)"',
      f'cd {q(remote_dir)} 2>/dev/null || {{ echo "$h: no {remote_dir} (run push first)"; exit 0; }}',
      f'if [ ! -f {pid} ]; then echo "$h: no run {tag}"; exit 0; fi',
      f'pid="$(cat {pid})"',
      ALIVE,
      f'if [ -f {rc} ]; then echo "$h: {tag} exited with status $(cat {rc})"',
      f'elif alive "$pid"; then echo "$h: {tag} running (pid $pid)"',
      f'else echo "$h: {tag} not running and left no exit status (stopped, killed, or the VM restarted)"; fi',
      f"tail -n {int(lines)} logs/{tag}.log",
    ]
  )


def stop_script(remote_dir: str, tag: str) -> str:
  q = shlex.quote
  pid = f"logs/{tag}.pid"
  # setsid made the command's shell a process-group leader: TERM reaches the whole group.
  return "\n".join(
    [
      'h="$(hostname)"',
      ALIVE,
      f"cd {q(remote_dir)}",
      f'if [ -f {pid} ] && alive "$(cat {pid})"; then',
      f'  kill -TERM -- "-$(cat {pid})" && echo "$h: sent SIGTERM to {tag}"',
      f'else echo "$h: {tag} is not running"; fi',
    ]
  )


def setup_script(remote_dir: str, tarball: str) -> str:
  q = shlex.quote
  return "\n".join(
    [
      "set -eu",
      f"mkdir -p {q(remote_dir)}",
      f"tar xzf {q(tarball)} -C {q(remote_dir)}",
      f"rm -f {q(tarball)}",
      f"cd {q(remote_dir)}",
      # Ubuntu images ship python3 without ensurepip, which `python3 -m venv` (scripts/setup.sh) needs.
      "python3 -c 'import ensurepip' 2>/dev/null || "
      "{ sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; }",
      "bash scripts/setup.sh",
      # With the package named, pip keeps jax within setup.py's pin while adding the TPU runtime.
      '.venv/bin/pip install -q -U -e . "jax[tpu]"',
      ".venv/bin/python -c \"import jax, socket; print(socket.gethostname() + ': jax ' + jax.__version__ + ' ready')\"",
    ]
  )


# ------------------------------------------------------------------------------------------------ steps
def hosts_of(description: dict) -> int:
  return max(1, len(description.get("networkEndpoints") or []))


def describe(runner: Runner, g: Gcloud) -> dict | None | bool:
  """The VM's description; None if it does not exist; True in dry-run (unknown)."""
  res = runner.query(g.tpu("describe", g.name, "--format=json"))
  if res is None:
    return True
  if res.returncode == 0:
    return json.loads(res.stdout or "{}")
  if "NOT_FOUND" in res.stderr or "not found" in res.stderr.lower():
    return None
  raise SystemExit(f"tpu_vm: gcloud describe failed (exit {res.returncode}):\n{res.stderr.strip()}")


def up(runner: Runner, g: Gcloud, args) -> int:
  """Creates the VM or reuses it; returns its number of hosts (1 in dry-run unless --hosts)."""
  if args.accelerator_type and not ACCELERATOR_RE.match(args.accelerator_type):
    raise UsageError(
      f"--accelerator-type={args.accelerator_type!r} is not an accelerator type: expected e.g. v4-8, v5litepod-16, "
      "v5p-8, v6e-8 (see `gcloud compute tpus accelerator-types list`)"
    )
  # Checked before anything runs, even though a VM that exists already does not need it.
  version = runtime_version(args.accelerator_type, args.runtime_version) if args.accelerator_type else None
  desc = describe(runner, g)
  if isinstance(desc, dict):
    have = desc.get("acceleratorType", "?")
    if args.accelerator_type and have != args.accelerator_type:
      raise SystemExit(
        f"tpu_vm: {g.name} exists with accelerator type {have}, not {args.accelerator_type}: delete it "
        "(tpu_vm.py delete) or choose another name"
      )
    state = desc.get("state", "?")
    if state in ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "DELETING"):
      raise SystemExit(f"tpu_vm: {g.name} exists but is {state}: delete it (tpu_vm.py delete) and run up again")
    runner.note(f"reusing {g.name} ({have}, {state}, {hosts_of(desc)} host(s))")
    return wait_ready(runner, g, desc)
  if not args.accelerator_type:
    raise UsageError(f"{g.name} does not exist yet: give --accelerator-type (e.g. v4-8) to create it")
  spot = ["--spot"] if args.spot else []
  extra = list(args.create_arg or [])
  if desc is True:
    runner.note("if it does not exist:")
  if args.queued and queued_state(runner, g):
    runner.note(f"queued resource {g.name} exists already: waiting for it instead of requesting another")
    wait_queued(runner, g, args.wait_minutes)
  elif args.queued:
    if runner.dry_run:
      runner.note("if no queued resource of that name exists either:")
    runner.run(
      g.queued(
        "create",
        g.name,
        f"--node-id={g.name}",
        f"--accelerator-type={args.accelerator_type}",
        f"--runtime-version={version}",
        *spot,
        *extra,
      )
    )
    wait_queued(runner, g, args.wait_minutes)
  else:
    runner.run(
      g.tpu("create", g.name, f"--accelerator-type={args.accelerator_type}", f"--version={version}", *spot, *extra)
    )
  if runner.dry_run:
    return getattr(args, "hosts", None) or 1
  return wait_ready(runner, g, describe(runner, g))


def wait_ready(runner: Runner, g: Gcloud, desc, minutes: float = 30) -> int:
  if runner.dry_run or not isinstance(desc, dict):
    return 1
  deadline = time.time() + 60 * minutes
  while desc.get("state") != "READY":
    if time.time() > deadline:
      raise SystemExit(f"tpu_vm: {g.name} is still {desc.get('state')} after {minutes} minutes")
    runner.note(f"{g.name} is {desc.get('state')}; waiting")
    time.sleep(READY_POLL_SECONDS)
    desc = describe(runner, g)
    if desc is None:
      raise SystemExit(f"tpu_vm: {g.name} disappeared while waiting for it")
  return hosts_of(desc)


def queued_state(runner: Runner, g: Gcloud) -> str | None:
  """The queued resource's state, or None when it does not exist (or in dry-run)."""
  res = runner.query(g.queued("describe", g.name, "--format=value(state.state)"))
  if res is None or res.returncode != 0:
    return None
  return res.stdout.strip() or "UNKNOWN"


def wait_queued(runner: Runner, g: Gcloud, minutes: float) -> None:
  if runner.dry_run:
    runner.note(f"then poll until the queued resource is ACTIVE (at most {minutes:g} minutes):")
    runner.show(g.queued("describe", g.name, "--format=value(state.state)"))
    return
  deadline = time.time() + 60 * minutes
  while True:
    res = runner.query(g.queued("describe", g.name, "--format=value(state.state)"))
    state = res.stdout.strip() if res.returncode == 0 else f"unknown ({res.stderr.strip()[:200]})"
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise SystemExit(
        f"tpu_vm: queued resource {g.name} is {state}; see `gcloud compute tpus queued-resources describe`"
      )
    if time.time() > deadline:
      raise SystemExit(f"tpu_vm: queued resource {g.name} still {state} after {minutes:g} minutes (left queued)")
    runner.note(f"queued resource {g.name}: {state}; waiting")
    time.sleep(READY_POLL_SECONDS)


def push(runner: Runner, g: Gcloud, args) -> None:
  tarball = os.path.join(args.local_tmp, f"robust_losses_{g.name}.tar.gz")
  remote_tarball = "robust_losses.tar.gz"  # in the worker's home directory
  # `git stash create` makes a commit of the working tree's tracked files without touching anything (it prints
  # nothing for a clean tree): uncommitted edits travel, untracked files do not.
  archive = f'tree="$(git stash create)"; git archive --format=tar.gz -o {shlex.quote(tarball)} "${{tree:-HEAD}}"'
  runner.run(["bash", "-c", f"set -e; cd {shlex.quote(REPO)}; {archive}"])
  runner.run(g.scp("all", tarball, f"{g.name}:{remote_tarball}"))
  runner.run(g.ssh("all", setup_script(args.remote_dir, remote_tarball)))
  if not runner.dry_run:
    os.remove(tarball)


def hosts_for_run(runner: Runner, g: Gcloud, args) -> int:
  if args.hosts:
    return args.hosts
  desc = describe(runner, g)
  if desc is None:
    raise SystemExit(f"tpu_vm: {g.name} does not exist in {g.zone}: create it first (tpu_vm.py up)")
  if desc is True:
    runner.note("dry-run: the number of hosts comes from that description; assuming 1 (pass --hosts=N to show N)")
    return 1
  return hosts_of(desc)


def run(runner: Runner, g: Gcloud, args, hosts: int | None = None) -> None:
  line, words, simple = command_line(args.user_command, args.command)
  hosts = hosts if hosts is not None else hosts_for_run(runner, g, args)
  line, flag = with_distributed(line, words, simple, hosts)
  if flag:
    runner.note(f"{hosts} hosts: added {flag} so that every host joins one jax.distributed job")
  runner.run(g.ssh("all", run_script(args.remote_dir, args.tag, line)))
  runner.note(
    f"started on every worker; follow it with: python scripts/tpu_vm.py status {g.name} --zone={g.zone}"
    + (f" --tag={args.tag}" if args.tag != "job" else "")
  )


def fetch(runner: Runner, g: Gcloud, args) -> None:
  if not args.workdir:
    raise UsageError("missing --workdir: the run's workdir as given in its command, e.g. --workdir=runs/c10")
  if args.workdir.strip() in (".", "/", ""):
    raise UsageError(f"--workdir={args.workdir!r}: give the run's own workdir, e.g. --workdir=runs/c10")
  q = shlex.quote
  remote = "robust_losses_fetch.tar.gz"
  if not runner.dry_run:
    os.makedirs(args.dest, exist_ok=True)
  local = os.path.join(args.dest, f".{g.name}_fetch.tar.gz")
  runner.run(g.ssh("0", f"set -eu\ncd {q(args.remote_dir)}\ntar czf ~/{remote} -- {q(args.workdir)}"))
  runner.run(g.scp("0", f"{g.name}:{remote}", local))
  runner.run(["tar", "xzf", local, "-C", args.dest])
  if not runner.dry_run:
    os.remove(local)
  runner.note(f"{args.workdir} of worker 0 (process 0 writes summary.json and metrics.jsonl) is in {args.dest}")


def delete(runner: Runner, g: Gcloud, args) -> None:
  quiet = ["--quiet"] if args.yes else []
  if args.queued:
    runner.run(g.queued("delete", g.name, "--force", *quiet))
  else:
    runner.run(g.tpu("delete", g.name, *quiet))


# ------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("name", nargs="?", help="TPU VM name (lowercase letters, digits, hyphens)")
  common.add_argument("--zone", help="zone, e.g. us-central2-b")
  common.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's configured one)")
  common.add_argument("--dry-run", action="store_true", help="print every command and run none")
  common.add_argument("--gcloud", default="gcloud", help="gcloud executable")
  common.add_argument("--remote-dir", default="robust_losses", help="repository directory on each worker (under ~)")
  common.add_argument("--tag", default="job", help="name of the run: logs/TAG.log, .pid, .rc on each worker")

  create = argparse.ArgumentParser(add_help=False)
  create.add_argument("--accelerator-type", help="e.g. v4-8 (one host), v4-32 (4 hosts), v5litepod-16, v6e-8")
  create.add_argument("--runtime-version", help=f"TPU software version (default by generation: {RUNTIME_VERSIONS})")
  create.add_argument("--spot", action="store_true", help="Spot TPU (cheaper, may be preempted)")
  create.add_argument("--queued", action="store_true", help="request through a queued resource and wait for it")
  create.add_argument("--wait-minutes", type=float, default=120, help="how long to wait for a queued resource")
  create.add_argument("--create-arg", action="append", help="extra flag for the create command (repeatable)")

  running = argparse.ArgumentParser(add_help=False)
  running.add_argument("--command", default=None, help="the command as one shell command line (or give it after --)")
  running.add_argument("--hosts", type=int, default=None, help="hosts of the slice (default: read from describe)")

  p = argparse.ArgumentParser(
    prog="tpu_vm.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  sub = p.add_subparsers(dest="action", required=True)
  sub.add_parser("up", parents=[common, create], help="create the TPU VM, or reuse it")
  push_p = sub.add_parser("push", parents=[common], help="copy the repository to every worker and set it up")
  sub.add_parser("run", parents=[common, running], help="start a command on every worker (-- COMMAND)")
  launch_p = sub.add_parser("launch", parents=[common, create, running], help="up + push + run")
  status_p = sub.add_parser("status", parents=[common], help="run state and log tail of every worker")
  logs_p = sub.add_parser("logs", parents=[common], help="one worker's log")
  sub.add_parser("stop", parents=[common], help="SIGTERM the run on every worker (the trainer checkpoints)")
  fetch_p = sub.add_parser("fetch", parents=[common], help="copy a workdir from worker 0")
  delete_p = sub.add_parser("delete", parents=[common], help="delete the TPU VM")
  for sp in (push_p, launch_p):
    sp.add_argument("--local-tmp", default=os.environ.get("TMPDIR", "/tmp"), help="where the tarball is built")
  for sp in (status_p, logs_p):
    sp.add_argument("--lines", type=int, default=20, help="log lines to show")
  logs_p.add_argument("--worker", default="0", help="worker index, or 'all'")
  logs_p.add_argument("--follow", action="store_true", help="tail -f (Ctrl-C to stop; the run goes on)")
  fetch_p.add_argument("--workdir", help="the run's --workdir (relative to the repository on the worker)")
  fetch_p.add_argument("--dest", default=".", help="local directory the workdir is extracted into")
  delete_p.add_argument("--queued", action="store_true", help="the VM came from a queued resource (deletes both)")
  delete_p.add_argument("--yes", action="store_true", help="no confirmation prompt (gcloud --quiet)")
  return p


def main(argv: list[str] | None = None, out=sys.stdout) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  user_command = []
  if "--" in argv:
    i = argv.index("--")
    argv, user_command = argv[:i], argv[i + 1 :]
  parser = build_parser()
  args = parser.parse_args(argv)
  args.user_command = user_command
  try:
    if user_command and args.action not in ("run", "launch"):
      raise UsageError(f"`{args.action}` takes no command after `--` (only run and launch do)")
    g = Gcloud(check_name(args.name), check_zone(args.zone), args.project, args.gcloud)
    check_tag(args.tag)
    check_remote_dir(args.remote_dir)
    if args.action == "logs" and not WORKER_RE.match(args.worker):
      raise UsageError(f"--worker={args.worker!r}: give a worker index (0, 1, ...) or 'all'")
    if args.action in ("run", "launch"):
      command_line(args.user_command, args.command)  # refuse an empty command before creating anything
      if args.hosts is not None and args.hosts < 1:
        raise UsageError(f"--hosts={args.hosts}: a slice has at least 1 host")
    if not args.dry_run and shutil.which(args.gcloud) is None:
      raise UsageError(
        f"{args.gcloud!r} not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
        " and run `gcloud auth login`, or use --dry-run to see the commands"
      )
    runner = Runner(args.dry_run, out)
    if args.action == "up":
      up(runner, g, args)
    elif args.action == "push":
      push(runner, g, args)
    elif args.action == "run":
      run(runner, g, args)
    elif args.action == "launch":
      hosts = up(runner, g, args)
      push(runner, g, args)
      run(runner, g, args, hosts=args.hosts or hosts)
    elif args.action == "status":
      runner.run(g.ssh("all", status_script(args.remote_dir, args.tag, args.lines)))
    elif args.action == "logs":
      tail = (
        f"tail -n {int(args.lines)}{' -f' if args.follow else ''} {shlex.quote(args.remote_dir)}/logs/{args.tag}.log"
      )
      runner.run(g.ssh(args.worker, tail))
    elif args.action == "stop":
      runner.run(g.ssh("all", stop_script(args.remote_dir, args.tag)))
    elif args.action == "fetch":
      fetch(runner, g, args)
    elif args.action == "delete":
      delete(runner, g, args)
  except UsageError as e:
    parser.error(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main())
