"""The package structure stays acyclic: no module of robust_losses/ or experiments/ imports, at any depth and
function-level imports included, a module that imports it back (a cycle made experiments/ hard to change once:
input_pipeline -> streaming -> train_lib -> input_pipeline)."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("robust_losses", "experiments")


def _modules():
  out = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(root, f)
          name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          out[name.removesuffix(".__init__")] = path
  return out


def _imports(name, path, modules):
  """Every project module `name` imports anywhere in its file (top level or inside functions)."""
  package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
      # `from pkg import sub` depends on pkg.sub (pkg's __init__ is being imported already, as any submodule's
      # package is); `from pkg import name` on pkg.
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for t in targets:
      while t and t not in modules:  # `import a.b.c` imports a.b.c (and its packages); keep the deepest known
        t = t.rpartition(".")[0]
      if t and t != name:
        found.add(t)
  return found


def _graph():
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph):
  """One cycle as a list of modules, or None (depth-first search with colours)."""
  state, stack = {}, []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph[n]):
      if state.get(m) == 1:
        return stack[stack.index(m) :] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    stack.pop()
    state[n] = 2
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_no_import_cycle_in_the_packages():
  graph = _graph()
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_sees_function_level_imports():
  graph = {"a": {"b"}, "b": {"a"}}
  assert _cycle(graph) == ["a", "b", "a"]
  # experiments/train.py imports experiments.train_lib; a function-level import is found too.
  assert "experiments.train_lib" in _graph()["experiments.train"]


def test_the_old_data_modules_are_gone():
  modules = _modules()
  assert not {"experiments.input_pipeline", "experiments.streaming"} & set(modules)
