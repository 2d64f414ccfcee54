"""Test-wide setup: 4 simulated CPU devices, so data-parallel code is tested without accelerators.

This must run before JAX initialises its backends, which is why it lives at the top of conftest.
Single-device tests build their mesh from ``jax.devices()[:1]``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import contextlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
# Tests build the same small programs many times; XLA:CPU takes seconds for RNG-heavy ones.
jax.config.update(
  "jax_compilation_cache_dir", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".pytest_cache", "jax")
)


@pytest.fixture
def tfds_mock(monkeypatch):
  """Returns a context manager: tfds.testing.mock_data(num_examples=N) usable with tfds.data_source.

  The metadata comes from the builder code, so no data_dir or network is needed. TFDS 4.9.10's mock sets
  `__getitems__` as a plain attribute of a MagicMock, so it is called without `self` and fails; patch the
  helper it wraps until that is fixed upstream.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  monkeypatch.setattr(mocking, "_getitems", lambda keys, generator, serialized=False: [generator[k] for k in keys])

  @contextlib.contextmanager
  def mock(num_examples):
    with tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE):
      yield

  return mock


def pytest_sessionfinish(session, exitstatus):
  # pytest exits 5 when it collected nothing; for this project that means a broken test tree, never success.
  if session.testscollected == 0:
    session.exitstatus = 1
    print("\nERROR: no tests were collected; the test tree is broken.")


def _slow_tests():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")
  with open(path) as f:
    return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
  # The fast tier (`-m "not slow"`) leaves out the tests listed in slow_tests.txt (measured, see
  # scripts/slow_tests.py) besides those marked slow in their own file.
  slow = _slow_tests()
  for item in items:
    if item.nodeid in slow:
      item.add_marker(pytest.mark.slow)
