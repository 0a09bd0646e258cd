"""A real Dango cluster on loopback for the Python tests.

Cluster() starts `dango-master` (RPC, admin and HTTP metadata on ports the
kernel picks) and `dango-node` processes that contribute segments, waits for
each to print its ready line (bounded), and stops them on close(): SIGTERM,
then SIGKILL after a bounded wait. The binaries come from DANGO_MASTER_BIN
and DANGO_NODE_BIN (set by CTest), else from DANGO_BUILD_DIR/apps.
"""

import os
import re
import select
import signal
import subprocess
import time

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def _bin(env, sub):
    path = os.environ.get(env)
    if path:
        return path
    build = os.environ.get("DANGO_BUILD_DIR", "build")
    return os.path.join(build, "apps", sub, sub)


def _read_line(proc, pattern, timeout):
    """First stdout line matching pattern (a regex), within timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            m = re.search(pattern, line.decode(errors="replace"))
            if m:
                return m
    raise RuntimeError(f"{proc.args[0]} not ready after {timeout}s")


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()


class Cluster:
    """A master and n nodes of segment_size bytes each."""

    def __init__(self, nodes=1, segment_size="128m", master_opts=()):
        self.procs = []
        self.nodes = []
        self.log = open(os.devnull, "wb")
        try:
            self._start_master(master_opts)
            for _ in range(nodes):
                self.add_node(segment_size)
        except BaseException:
            self.close()
            raise

    def _spawn(self, argv):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def _start_master(self, opts):
        self.master_proc = self._spawn([
            _bin("DANGO_MASTER_BIN", "dango-master"),
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--metadata-listen", "127.0.0.1:0",
            *opts])
        m = _read_line(self.master_proc,
                       r"listening on (\S+?),.*metadata (\S+)",
                       READY_TIMEOUT)
        self.master = m.group(1)
        self.metadata = m.group(2)

    def add_node(self, segment_size="128m"):
        p = self._spawn([
            _bin("DANGO_NODE_BIN", "dango-node"),
            "--master", self.master,
            "--metadata", self.metadata,
            "--listen", "127.0.0.1:0",
            "--segment-size", segment_size])
        m = _read_line(p, r"serving segment (\S+)", READY_TIMEOUT)
        self.nodes.append((p, m.group(1)))
        return m.group(1)

    def stop_master(self):
        _stop(self.master_proc)

    def close(self):
        for p in reversed(self.procs):
            _stop(p)
        self.procs = []
        if not self.log.closed:
            self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
