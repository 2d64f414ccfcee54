"""scripts/tpu_vm.py: the gcloud commands it would run, and its remote scripts run here by bash.

No test calls the real gcloud (none is installed, and there is no network): the commands are checked in
--dry-run output, or recorded by a fake `gcloud` (a script that logs its argv and answers `describe`).
The remote scripts (start in the background, status, stop) run locally under bash in a temporary
directory standing in for a worker's home, which checks the quoting of the user's command end to end.
"""

import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "tpu_vm.py")
ZONE = "--zone=us-central2-b"

_spec = importlib.util.spec_from_file_location("tpu_vm", SCRIPT)
tpu_vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu_vm)


def commands(*argv):
  """The argv lists a dry run would execute, recorded in-process, and its printed text."""
  recorded, out = [], io.StringIO()
  real_show = tpu_vm.Runner.show

  def show(self, cmd):
    recorded.append(list(cmd))
    real_show(self, cmd)

  tpu_vm.Runner.show = show
  try:
    assert tpu_vm.main(_dry(argv), out=out) == 0
  finally:
    tpu_vm.Runner.show = real_show
  return recorded, out.getvalue()


def _dry(argv):
  """argv with --dry-run added before the user's command, if any."""
  i = argv.index("--") if "--" in argv else len(argv)
  return [*argv[:i], "--dry-run", *argv[i:]]


def cli(*argv, env=None):
  return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, env=env, timeout=60)


def ssh_script(cmd):
  """The --command of a `gcloud ... ssh` argv."""
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], cmd
  return next(a for a in cmd if a.startswith("--command="))[len("--command=") :]


# ------------------------------------------------------------------------------------------- commands
def test_up_creates_when_absent():
  cmds, text = commands("up", "my-tpu", ZONE, "--accelerator-type=v4-32", "--spot", "--project=proj")
  tail = ["--zone=us-central2-b", "--project=proj"]
  assert cmds[0] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "my-tpu", "--format=json", *tail]
  assert cmds[1] == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "create",
    "my-tpu",
    "--accelerator-type=v4-32",
    "--version=tpu-ubuntu2204-base",
    "--spot",
    *tail,
  ]
  assert "# if it does not exist:" in text
  # Printed commands are shell-quoted and can be pasted as they are.
  assert shlex.split(text.splitlines()[0]) == cmds[0]


def test_up_queued_resource_and_runtime_default():
  cmds, _ = commands("up", "q-tpu", ZONE, "--accelerator-type=v5litepod-16", "--queued", "--create-arg=--reserved")
  assert cmds[1][3:6] == ["queued-resources", "describe", "q-tpu"]  # an earlier request is waited for, not repeated
  create = cmds[2]
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "q-tpu"]
  assert "--node-id=q-tpu" in create and "--runtime-version=v2-alpha-tpuv5-lite" in create
  assert "--reserved" in create and "--spot" not in create
  assert cmds[3][:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]  # polled until ACTIVE


def test_push_copies_the_git_tree_to_every_worker_and_sets_up():
  cmds, _ = commands("push", "my-tpu", ZONE)
  archive, scp, ssh = cmds
  assert archive[:2] == ["bash", "-c"] and "git stash create" in archive[2] and "git archive" in archive[2]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert scp[5].endswith("robust_losses_my-tpu.tar.gz") and f"-o {scp[5]} " in archive[2]  # the archive made
  assert scp[6] == "my-tpu:robust_losses.tar.gz"
  setup = ssh_script(ssh)
  assert "--worker=all" in ssh
  assert setup.index("bash scripts/setup.sh") < setup.index('pip install -q -U -e . "jax[tpu]"')


def test_run_starts_in_background_on_all_workers_with_distributed_for_multi_host():
  cmds, text = commands("run", "my-tpu", ZONE, "--hosts=4", "--", "python", "-m", "experiments.train", "--workdir=r")
  assert len(cmds) == 1 and "--worker=all" in cmds[0]
  script = ssh_script(cmds[0])
  assert "setsid nohup bash -c" in script and "> logs/job.log 2>&1 < /dev/null &" in script
  assert "python -m experiments.train --workdir=r --config.distributed=True" in script
  assert "added --config.distributed=True" in text


def test_run_reads_hosts_from_describe_in_dry_run():
  cmds, text = commands("run", "my-tpu", ZONE, "--", "python", "-m", "experiments.train")
  assert cmds[0][4] == "describe" and "assuming 1" in text
  assert "--config.distributed" not in ssh_script(cmds[1])


@pytest.mark.parametrize(
  "words,hosts,expect",
  [
    (["python", "-m", "experiments.train", "--workdir=w"], 4, "--config.distributed=True"),
    (["python", "-m", "experiments.sweep", "--workdir=w"], 2, "--config.base.distributed=True"),
    (["python", "-m", "experiments.train", "--workdir=w"], 1, None),
    (["python", "-m", "experiments.train", "--config.distributed=False"], 4, None),  # the user's choice stays
    (["ls", "-la"], 4, None),  # any command may run; only train/sweep get the flag
  ],
)
def test_distributed_flag(words, hosts, expect):
  line, flag = tpu_vm.with_distributed(*tpu_vm.command_line(words, None), hosts)
  assert flag == expect
  assert line == shlex.join(words) + (f" {expect}" if expect else "")


@pytest.mark.parametrize(
  "line,simple",
  [
    ("XLA_FLAGS='--a --b' python -m experiments.train --config.note='x; y | z # w'", True),  # quoted: one word
    ("cd x && python -m experiments.train", False),
    ("python -m experiments.train; echo done", False),
    ("python -m experiments.train | tee out", False),
    ("python -m experiments.train # note", False),  # an appended flag would be part of the comment
  ],
)
def test_flag_is_appended_to_a_command_string_only_when_safe(line, simple):
  text, words, is_simple = tpu_vm.command_line([], line)
  assert is_simple == simple
  if simple:
    assert tpu_vm.with_distributed(text, words, is_simple, 2)[0] == line + " --config.distributed=True"
  else:
    with pytest.raises(tpu_vm.UsageError, match="add --config.distributed=True to the training/sweep command yourself"):
      tpu_vm.with_distributed(text, words, is_simple, 2)


def test_status_logs_stop_fetch_delete():
  assert ssh_script(commands("status", "t", ZONE, "--tag=a")[0][0]).endswith("tail -n 20 logs/a.log")
  (logs,) = commands("logs", "t", ZONE, "--worker=2", "--follow", "--lines=5")[0]
  assert "--worker=2" in logs and ssh_script(logs) == "tail -n 5 -f robust_losses/logs/job.log"
  assert "kill -TERM" in ssh_script(commands("stop", "t", ZONE)[0][0])
  tar_remote, scp, untar = commands("fetch", "t", ZONE, "--workdir=runs/my run", "--dest=out")[0]
  assert "--worker=0" in tar_remote and "tar czf ~/robust_losses_fetch.tar.gz -- 'runs/my run'" in ssh_script(
    tar_remote
  )
  assert scp[5:7] == ["t:robust_losses_fetch.tar.gz", "out/.t_fetch.tar.gz"] and "--worker=0" in scp
  assert untar == ["tar", "xzf", "out/.t_fetch.tar.gz", "-C", "out"]
  assert commands("delete", "t", ZONE)[0] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t", "--zone=us-central2-b"]
  ]
  (qdel,) = commands("delete", "t", ZONE, "--queued", "--yes")[0]
  assert qdel[3:6] == ["queued-resources", "delete", "t"] and "--force" in qdel and "--quiet" in qdel


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
  "argv,message",
  [
    (["up", ZONE], "missing TPU name"),
    (["up", "my-tpu"], "missing --zone"),
    (["up", "my-tpu", "--zone=us-central2"], "is not a zone"),
    (["up", "My_TPU", ZONE], "TPU name 'My_TPU' is not valid"),
    (["up", "t", ZONE, "--accelerator-type=v9x-8"], "no default runtime version for accelerator type 'v9x-8'"),
    (["up", "t", ZONE, "--accelerator-type=tpu4"], "is not an accelerator type"),
    (["run", "t", ZONE, "--hosts=2", "--"], "empty command"),
    (["run", "t", ZONE, "--hosts=2", "--command="], "empty command"),
    (["run", "t", ZONE, "--hosts=2", "--command= "], "empty command"),
    (["run", "t", ZONE, "--command=python 'unbalanced"], "is not a valid shell command line"),
    (["run", "t", ZONE, "--command=ls", "--", "ls"], "not both"),
    (["run", "t", ZONE, "--hosts=0", "--", "ls"], "--hosts=0"),
    (["status", "t", ZONE, "--", "ls"], "takes no command"),
    (["status", "t", ZONE, "--tag=a b"], "--tag='a b' is not valid"),
    (["logs", "t", ZONE, "--worker=first"], "--worker='first'"),
    (["fetch", "t", ZONE], "missing --workdir"),
    (["push", "t", ZONE, "--remote-dir=~/x"], "--remote-dir='~/x' is not valid"),
    (
      ["run", "t", ZONE, "--hosts=4", "--command=cd x && python -m experiments.train"],
      "add --config.distributed=True to the training/sweep command yourself",
    ),
  ],
)
def test_bad_input_is_refused_with_a_clear_message(argv, message):
  proc = cli(*_dry(argv))
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert message in proc.stderr, proc.stderr
  assert "gcloud" not in proc.stdout  # refused before any command is printed


def test_missing_gcloud_is_a_clear_error():
  proc = cli("status", "t", ZONE, "--gcloud=/nonexistent/gcloud")
  assert proc.returncode == 2 and "'/nonexistent/gcloud' not found on PATH" in proc.stderr


# -------------------------------------------------------------------------------------- a fake gcloud
FAKE = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
state = os.environ["FAKE_GCLOUD_STATE"]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
  f.write(json.dumps(args) + "\\n")
desc = os.path.join(state, "describe.json")
if args[2:4] == ["tpu-vm", "describe"]:
  if not os.path.exists(desc):
    sys.exit(print("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource not found", file=sys.stderr) or 1)
  print(open(desc).read())
elif args[2:4] == ["tpu-vm", "create"]:
  acc = next(a.split("=", 1)[1] for a in args if a.startswith("--accelerator-type="))
  hosts = int(os.environ.get("FAKE_GCLOUD_HOSTS", "1"))
  json.dump({{"state": "READY", "acceleratorType": acc, "networkEndpoints": [{{}}] * hosts}}, open(desc, "w"))
elif args[2:4] == ["tpu-vm", "scp"]:
  src, dst = [a for a in args[4:] if not a.startswith("--")]
  if ":" in src:  # a download: hand over the archive the test prepared
    shutil.copy(os.path.join(state, "remote.tar.gz"), dst)
  else:  # an upload: keep it for the test to read
    shutil.copy(src, os.path.join(state, "uploaded.tar.gz"))
"""


@pytest.fixture
def fake_gcloud(tmp_path):
  bin_dir, state = tmp_path / "bin", tmp_path / "state"
  bin_dir.mkdir()
  state.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(FAKE.format(python=sys.executable))
  gcloud.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_GCLOUD_STATE=str(state))

  def calls():
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]

  return env, state, calls


def test_launch_creates_then_reuses(fake_gcloud, tmp_path):
  env, state, calls = fake_gcloud
  env["FAKE_GCLOUD_HOSTS"] = "2"
  argv = ["launch", "t", ZONE, "--accelerator-type=v4-16", f"--local-tmp={tmp_path}", "--"]
  argv += ["python", "-m", "experiments.sweep", "--config=configs/sweeps/digits.py", "--workdir=runs/s"]
  proc = cli(*argv, env=env)
  assert proc.returncode == 0, proc.stderr
  verbs = [c[2] + " " + c[3] for c in calls()]
  assert verbs == [
    "tpu-vm describe",
    "tpu-vm create",
    "tpu-vm describe",
    "tpu-vm scp",
    "tpu-vm ssh",
    "tpu-vm ssh",
  ]
  # The uploaded tarball is the git tree; the local copy was removed.
  names = tarfile.open(state / "uploaded.tar.gz").getnames()
  assert "README.md" in names and "scripts/setup.sh" in names and not list(tmp_path.glob("*.tar.gz"))
  # Two hosts read from the description: the sweep gets the flag for its runs.
  assert "--workdir=runs/s --config.base.distributed=True" in calls()[-1][-2]

  (state / "calls.jsonl").unlink()
  proc = cli("up", "t", ZONE, "--accelerator-type=v4-16", env=env)
  assert proc.returncode == 0, proc.stderr
  assert [c[3] for c in calls()] == ["describe"] and "reusing t (v4-16, READY, 2 host(s))" in proc.stdout
  proc = cli("up", "t", ZONE, "--accelerator-type=v4-8", env=env)
  assert proc.returncode == 1 and "exists with accelerator type v4-16, not v4-8" in proc.stderr


def test_fetch_extracts_worker_zeros_workdir(fake_gcloud, tmp_path):
  env, state, calls = fake_gcloud
  src = tmp_path / "remote" / "runs" / "r"
  src.mkdir(parents=True)
  (src / "summary.json").write_text("{}")
  with tarfile.open(state / "remote.tar.gz", "w:gz") as tar:
    tar.add(src, arcname="runs/r")
  dest = tmp_path / "dest"
  proc = cli("fetch", "t", ZONE, "--workdir=runs/r", f"--dest={dest}", env=env)
  assert proc.returncode == 0, proc.stderr
  assert (dest / "runs" / "r" / "summary.json").read_text() == "{}"
  assert [p.name for p in dest.iterdir()] == ["runs"]  # the archive was removed


# ------------------------------------------------------------------------------ remote scripts, locally
@pytest.fixture
def worker_home(tmp_path):
  """A worker's home with the repository directory and a stand-in for its .venv."""
  repo = tmp_path / "robust_losses"
  (repo / ".venv" / "bin").mkdir(parents=True)
  (repo / ".venv" / "bin" / "activate").write_text("export FROM_VENV=1\n")
  return tmp_path


def remote(home, script):
  return subprocess.run(["bash", "-c", script], cwd=home, capture_output=True, text=True, timeout=30)


def wait_for(path, seconds=20):
  deadline = time.time() + seconds
  while not path.exists():
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)
  time.sleep(0.05)  # the writer's echo may still be flushing


ECHO_ARGV = [sys.executable, "-c", "import json, os, sys; print(json.dumps([os.environ['FROM_VENV'], *sys.argv[1:]]))"]
TRICKY = ["a b", "it's", '"double"', "$HOME", "*", "semi;colon", "back\\slash", "#not a comment"]


@pytest.mark.parametrize("form", ["argv", "string"])
def test_user_command_arrives_verbatim(worker_home, form):
  words = ECHO_ARGV + TRICKY
  argv = ["run", "t", ZONE, "--hosts=1"]
  argv += ["--", *words] if form == "argv" else [f"--command={shlex.join(words)}  # a trailing comment"]
  cmds, _ = commands(*argv)
  started = remote(worker_home, ssh_script(cmds[0]))
  assert started.returncode == 0, started.stderr
  logs = worker_home / "robust_losses" / "logs"
  wait_for(logs / "job.rc")
  assert (logs / "job.rc").read_text().strip() == "0"
  assert json.loads((logs / "job.log").read_text()) == ["1", *TRICKY]  # activated venv, every word intact
  status = remote(worker_home, tpu_vm.status_script("robust_losses", "job", 5))
  assert ": job exited with status 0" in status.stdout and "it's" in status.stdout


def test_running_job_is_not_started_twice_and_stops_on_sigterm(worker_home):
  start = tpu_vm.run_script("robust_losses", "long", "sleep 30")
  assert remote(worker_home, start).returncode == 0
  logs = worker_home / "robust_losses" / "logs"
  wait_for(logs / "long.pid")
  again = remote(worker_home, start)
  assert again.returncode == 1 and "run long is still running" in again.stderr
  assert ": long running (pid" in remote(worker_home, tpu_vm.status_script("robust_losses", "long", 5)).stdout
  stopped = remote(worker_home, tpu_vm.stop_script("robust_losses", "long"))
  assert "sent SIGTERM to long" in stopped.stdout
  pid = int((logs / "long.pid").read_text())
  deadline = time.time() + 10
  while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
    assert time.time() < deadline, "the job survived SIGTERM"
    time.sleep(0.05)
  assert "not running" in remote(worker_home, tpu_vm.status_script("robust_losses", "long", 5)).stdout
  # A failing command records its exit status.
  assert remote(worker_home, tpu_vm.run_script("robust_losses", "bad", "exit 3")).returncode == 0
  wait_for(logs / "bad.rc")
  assert (logs / "bad.rc").read_text().strip() == "3"
