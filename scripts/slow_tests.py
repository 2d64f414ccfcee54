"""Writes tests/slow_tests.txt, the tests the fast tier (`pytest -m "not slow"`) leaves out, from the
`--durations=0` report of a full run:

  PYTEST_ADDOPTS=--durations=0 bash .ci/run > ci.log 2>&1; python scripts/slow_tests.py ci.log

A test is slow when its setup + call + teardown took at least THRESHOLD seconds in that run, except the
fastest test of each file when it takes under KEEP_MAX seconds: it stays in the fast tier, so that the module
a test file covers is exercised there (the subprocess-only files, test_install, test_reliability and
test_examples, are then left to the full run). tests/conftest.py marks the listed tests `slow`; tests may
also be marked in their file.
"""

import collections
import os
import re
import sys

THRESHOLD = 0.25  # seconds on the 2-core CI machine, both pytest workers busy
KEEP_MAX = 5.0  # the fastest test of a file stays in the fast tier only if it is this fast
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "slow_tests.txt")


def main(log):
  seconds = collections.defaultdict(float)
  for line in open(log):
    m = re.match(r"^([0-9.]+)s (?:call|setup|teardown)\s+(\S+)", line)
    if m:
      seconds[m.group(2)] += float(m.group(1))
  fastest = {}
  for test, s in seconds.items():
    f = test.split("::")[0]
    if f not in fastest or s < seconds[fastest[f]]:
      fastest[f] = test
  keep = {t for t in fastest.values() if seconds[t] < KEEP_MAX}
  slow = sorted(t for t, s in seconds.items() if s >= THRESHOLD and t not in keep)
  with open(OUT, "w") as f:
    f.write(f"# Written by scripts/slow_tests.py (threshold {THRESHOLD} s); read by tests/conftest.py.\n")
    f.writelines(t + "\n" for t in slow)
  fast = sum(s for t, s in seconds.items() if t not in slow)
  print(f"{len(slow)} slow tests ({sum(seconds[t] for t in slow):.0f} s), the rest {fast:.0f} s -> {OUT}")


if __name__ == "__main__":
  main(sys.argv[1])
