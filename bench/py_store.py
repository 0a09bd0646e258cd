#!/usr/bin/env python3
"""The Python binding against the C client, in one invocation.

Starts one bench_store_server (a master and a segment), then alternates,
ROUNDS times:
  - Python: THREADS threads sharing one MooncakeDistributedStore, each
    with its own slice of one registered buffer, calling batch_put_from
    (fresh keys; keys older than the working set are removed in a
    batch_remove, timed as part of the put, as bench_store does) or
    batch_get_into (a preloaded key space) of BATCH blocks of SIZE bytes;
  - C: bench_store --op batch_put|batch_get with the same size, batch,
    threads, duration (one shared client, registered buffers,
    dango_store_batch_put / batch_get: the calls the Python methods make).
Prints one JSON line per measurement, then per op the medians and the
ratio python/C (target >= 0.9), also as JSON lines.

usage: PYTHONPATH=BUILD/python python3 bench/py_store.py [--build BUILD]
       [--size 1m] [--threads 4] [--batch 8] [--duration 3] [--rounds 3]
       [--working-set 512m] [--segment 2g]
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from dango.store import MooncakeDistributedStore


def parse_size(s):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.lower().rstrip("ib").rstrip("b") if s[-1].isalpha() else s
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


def start_server(build, segment):
    p = subprocess.Popen([os.path.join(build, "bench", "bench_store_server"),
                          "--segment", segment,
                          "--master-listen", "127.0.0.1:0",
                          "--xfer-listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    line = p.stdout.readline()  # the server prints it once both are up
    if not line:
        p.kill()
        raise RuntimeError("bench_store_server did not start")
    return p, json.loads(line)["master"]


def run_c(build, master, op, a):
    argv = [os.path.join(build, "bench", "bench_store"), "--master", master,
            "--op", "batch_" + op, "--batch", str(a.batch),
            "--size", str(a.size), "--threads", str(a.threads),
            "--duration", str(a.duration), "--warmup", str(a.warmup),
            "--working-set", str(a.working_set), "--listen", "127.0.0.1:0"]
    out = subprocess.run(argv, capture_output=True, text=True,
                         timeout=a.duration * 4 + 120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"bench_store failed: {out.stderr[-500:]}")
    r = json.loads(lines[-1])
    return {"gbps": r["gbps"], "ops": r["ops"], "errors": r["errors"]}


class PyBench:
    def __init__(self, master, a):
        self.a = a
        self.s = MooncakeDistributedStore()
        rc = self.s.setup("127.0.0.1", "P2PHANDSHAKE", 0, "64MB", "tcp", "",
                          master)
        if rc != 0:
            raise RuntimeError(f"setup: {rc}")
        per = a.size * a.batch
        self.mem = bytearray(per * a.threads)
        self.addr = ctypes.addressof(
            (ctypes.c_char * len(self.mem)).from_buffer(self.mem))
        if self.s.register_buffer(self.addr, len(self.mem)) != 0:
            raise RuntimeError("register_buffer")
        self.nkeys = max(a.working_set // a.size, a.batch * a.threads)
        self.run_id = 0

    def close(self):
        self.s.remove_by_regex("^py[gp]", True)
        self.s.unregister_buffer(self.addr)
        self.s.close()

    def preload(self):
        a = self.a
        for i in range(0, self.nkeys, a.batch):
            keys = [f"pyg/{j}" for j in range(i, min(i + a.batch, self.nkeys))]
            ptrs = [self.addr + (j % a.batch) * a.size
                    for j in range(len(keys))]
            res = self.s.batch_put_from(keys, ptrs, [a.size] * len(keys))
            if any(r != 0 for r in res):
                raise RuntimeError(f"preload: {res}")

    def run(self, op):
        a = self.a
        self.run_id += 1
        stop = threading.Event()
        counts = [0] * a.threads
        errors = [0] * a.threads
        live = max(self.nkeys // a.threads // a.batch, 2)  # batches kept
        start_at = [0.0]

        def worker(t):
            base = self.addr + t * a.size * a.batch
            ptrs = [base + i * a.size for i in range(a.batch)]
            sizes = [a.size] * a.batch
            seq, n = 0, 0
            while not stop.is_set():
                if op == "get":
                    first = (seq * a.threads + t) * a.batch
                    keys = [f"pyg/{(first + i) % self.nkeys}"
                            for i in range(a.batch)]
                    res = self.s.batch_get_into(keys, ptrs, sizes)
                    bad = sum(1 for r in res if r != a.size)
                else:
                    keys = [f"pyp/{self.run_id}/{t}/{seq}/{i}"
                            for i in range(a.batch)]
                    res = self.s.batch_put_from(keys, ptrs, sizes)
                    bad = sum(1 for r in res if r != 0)
                    if seq >= live:
                        old = seq - live
                        self.s.batch_remove(
                            [f"pyp/{self.run_id}/{t}/{old}/{i}"
                             for i in range(a.batch)], True)
                seq += 1
                if time.monotonic() >= start_at[0]:
                    n += a.batch
                errors[t] += bad
            counts[t] = n

        threads = [threading.Thread(target=worker, args=(t,))
                   for t in range(a.threads)]
        start_at[0] = time.monotonic() + a.warmup
        for th in threads:
            th.start()
        time.sleep(a.warmup + a.duration)
        stop.set()
        for th in threads:
            th.join(60)
        secs = time.monotonic() - start_at[0]
        blocks = sum(counts)
        self.s.remove_by_regex(f"^pyp/{self.run_id}/", True)
        return {"gbps": blocks * a.size / secs / 1e9, "ops": blocks / secs,
                "errors": sum(errors)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("DANGO_BUILD_DIR",
                                                      "build"))
    ap.add_argument("--size", type=parse_size, default=1 << 20)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--working-set", type=parse_size, default=512 << 20)
    ap.add_argument("--segment", default="2g")
    a = ap.parse_args()

    server, master = start_server(a.build, a.segment)
    results = {}
    try:
        py = PyBench(master, a)
        py.preload()
        for rnd in range(a.rounds):
            for op in ("put", "get"):
                for system in ("python", "c"):
                    r = (py.run(op) if system == "python"
                         else run_c(a.build, master, op, a))
                    r.update({"bench": "py_store", "system": system,
                              "op": op, "size": a.size,
                              "threads": a.threads,
                              "batch": a.batch,
                              "round": rnd})
                    print(json.dumps(r), flush=True)
                    results.setdefault((op, system), []).append(r)
        py.close()
    finally:
        server.terminate()
        server.wait(30)

    ok = True
    for op in ("put", "get"):
        p = statistics.median(r["gbps"] for r in results[(op, "python")])
        c = statistics.median(r["gbps"] for r in results[(op, "c")])
        errs = sum(r["errors"] for r in results[(op, "python")] +
                   results[(op, "c")])
        ratio = p / c if c > 0 else 0.0
        ok = ok and errs == 0
        print(json.dumps({"bench": "py_store", "summary": op,
                          "size": a.size, "threads": a.threads,
                          "python_gbps": round(p, 3), "c_gbps": round(c, 3),
                          "python_mbps": round(p * 1e3, 1),
                          "c_mbps": round(c * 1e3, 1),
                          "ratio": round(ratio, 3), "target": 0.9,
                          "met": ratio >= 0.9, "errors": errs}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
