r"""Where a pytest session's JAX time goes: tracing, lowering to MLIR and XLA's backend compile,
summed per test and per jitted function.

As a pytest plugin (every xdist worker writes its own file into `COMPILE_PROFILE_DIR`):

  COMPILE_PROFILE_DIR=/tmp/profile PYTHONPATH=experiments \
      .venv/bin/python -m pytest -q -p compile_profile tests/rl tests/sampling

then the summary as JSON (the totals, the `--top` functions and tests):

  .venv/bin/python experiments/compile_profile.py --dir=/tmp/profile --top=20

Only in-process compiles are seen: a subprocess a test starts is not a pytest worker. A shared
fixture's compiles count for the test that first builds it.
"""
import collections
import glob
import json
import os

from absl import app, flags

# The duration events JAX records (jax._src.dispatch), by their last path part.
EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")

_current_test = ["(outside a test)"]
_totals: dict = collections.defaultdict(lambda: [0.0, 0])


def _listener(event: str, duration: float, fun_name: str = "?", **_):
  name = event.rsplit("/", 1)[-1]
  if name in EVENTS:
    entry = _totals[(_current_test[0], name, fun_name)]
    entry[0] += duration
    entry[1] += 1


def pytest_configure(config):
  del config
  if not os.environ.get("COMPILE_PROFILE_DIR"):  # before the session runs, not after
    raise RuntimeError("compile_profile: set COMPILE_PROFILE_DIR to the folder for its files")
  from jax._src import monitoring  # the duration events have no public listener API
  monitoring.register_event_duration_secs_listener(_listener)


def pytest_unconfigure(config):
  del config
  from jax._src import monitoring
  monitoring.unregister_event_duration_listener(_listener)


def pytest_runtest_setup(item):
  _current_test[0] = item.nodeid


def pytest_sessionfinish(session):
  del session
  folder = os.environ["COMPILE_PROFILE_DIR"]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
    json.dump([[test, event, fun, seconds, count]
               for (test, event, fun), (seconds, count) in _totals.items()], f)


def summary(folder: str, top: int) -> dict:
  """The files of one session folded together.

  Returns:
    {"seconds": {event: s}, "functions": [[event, function, s, count]] (the `top` longest),
     "tests": [[test, s]] (the `top` longest, all three events summed)}.
  """
  events, functions, tests = collections.Counter(), collections.defaultdict(lambda: [0.0, 0]), \
      collections.Counter()
  for path in glob.glob(os.path.join(folder, "*.json")):
    with open(path) as f:
      for test, event, fun, seconds, count in json.load(f):
        events[event] += seconds
        functions[(event, fun)][0] += seconds
        functions[(event, fun)][1] += count
        tests[test] += seconds
  longest = sorted(functions.items(), key=lambda kv: -kv[1][0])[:top]
  return {"seconds": {e: round(events[e], 3) for e in EVENTS},
          "functions": [[e, fun, round(s, 3), n] for (e, fun), (s, n) in longest],
          "tests": [[t, round(s, 3)] for t, s in tests.most_common(top)]}


def main(argv):
  del argv
  print(json.dumps(summary(flags.FLAGS.dir, flags.FLAGS.top), indent=1))


if __name__ == "__main__":
  # Defined here, not at import: as a pytest plugin the module must leave absl's flags alone.
  flags.DEFINE_string("dir", None, "The folder COMPILE_PROFILE_DIR named.", required=True)
  flags.DEFINE_integer("top", 20, "How many functions and tests to list.")
  app.run(main)
