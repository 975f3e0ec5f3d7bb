r"""Runs one job as N local processes, as a pod would (for development and tests, on CPU):

  python -m unigrpo_jax.launch_local --num_processes=2 --devices_per_process=4 -- \
      --config=configs/shapeworld.py:tiny --workdir=/tmp/run

starts N processes of `unigrpo_jax.main` with the flags after `--`, each with
`devices_per_process` CPU devices, meeting at a free port of 127.0.0.1
(`--config.distributed.*`), their collectives over Gloo. Their output is streamed line by line,
each line prefixed with its process (`[1] …`). A signal to the launcher is passed on to every
process. Exits with the worst status: the first non-zero one by process index (a process killed
by signal s counts as 128 + s), else 0.
"""
import os
import signal
import socket
import subprocess
import sys
import threading

from absl import app, flags

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes to start.", lower_bound=1)
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "CPU devices of each process.",
                                lower_bound=1)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(main_flags: list[str], num_processes: int, port: int) -> list[list[str]]:
  """The `unigrpo_jax.main` command line of each process."""
  return [[sys.executable, "-u", "-m", "unigrpo_jax.main", *main_flags,
           f"--config.distributed.coordinator_address=127.0.0.1:{port}",
           f"--config.distributed.num_processes={num_processes}",
           f"--config.distributed.process_id={i}"] for i in range(num_processes)]


def environment(devices: int) -> dict:
  """The processes' environment: CPU only, `devices` host devices each."""
  flags_ = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
      flags_ + [f"--xla_force_host_platform_device_count={devices}"]))


def _stream(index: int, pipe, out):
  for line in pipe:
    out.write(f"[{index}] {line}")
    out.flush()


def exit_status(returncodes: list[int]) -> int:
  """The worst of the processes' statuses (see the module docstring)."""
  statuses = [128 - code if code < 0 else code for code in returncodes]
  return next((s for s in statuses if s), 0)


def launch(main_flags: list[str], num_processes: int, devices_per_process: int) -> int:
  """Runs the processes to the end; returns `exit_status` of their return codes."""
  env = environment(devices_per_process)
  procs = [subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
           for cmd in commands(main_flags, num_processes, free_port())]
  threads = [threading.Thread(target=_stream, args=(i, pipe, out), daemon=True)
             for i, p in enumerate(procs)
             for pipe, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))]
  for t in threads:
    t.start()

  def forward(signum, frame):
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, forward)
  codes = [p.wait() for p in procs]
  for t in threads:
    t.join()
  return exit_status(codes)


def main(argv):
  main_flags = argv[1:]
  if not main_flags:
    raise app.UsageError("give unigrpo_jax.main's flags after `--`")
  sys.exit(launch(main_flags, _NUM.value, _DEVICES.value))


if __name__ == "__main__":
  app.run(main)
