#!/usr/bin/env python3
"""A minimal KV-connector loop on the Dango store, in the shape inference
engines use (SGLang HiCache, vLLM/LMCache connectors):

  1. register the engine's KV buffer with the store (zero-copy);
  2. cut a token sequence into blocks and name each block by the hash of
     its whole prefix, one key per layer and K/V: "<model>_<hash>_<layer>_k";
  3. ask which blocks the store already has (batch_is_exist), and
     batch_put_from only the missing ones, straight from the buffer;
  4. on another "instance", batch_get_into a second registered buffer and
     check the bytes.

Run against a master with the HTTP metadata server, e.g.

  dango-master --metadata-listen 127.0.0.1:8080 &
  dango-node --metadata http://127.0.0.1:8080/metadata --segment-size 1g &
  PYTHONPATH=build/python python3 examples/kv_connector.py \
      --master 127.0.0.1:50051 --metadata http://127.0.0.1:8080/metadata
"""

import argparse
import ctypes
import hashlib
import random
import sys

from dango.store import MooncakeDistributedStore, ReplicateConfig


class KVBuffer:
    """An engine's paged KV cache: blocks x layers x (K, V) x block_bytes."""

    def __init__(self, blocks, layers, block_bytes):
        self.blocks, self.layers, self.block_bytes = blocks, layers, block_bytes
        self.mem = bytearray(blocks * layers * 2 * block_bytes)
        self.addr = ctypes.addressof(
            (ctypes.c_char * len(self.mem)).from_buffer(self.mem))

    def offset(self, block, layer, kv):
        return ((block * self.layers + layer) * 2 + kv) * self.block_bytes


def prefix_hashes(tokens, block_tokens):
    """One hash per full block, each covering the whole prefix before it."""
    hashes, h = [], b""
    for i in range(0, len(tokens) - block_tokens + 1, block_tokens):
        block = tokens[i:i + block_tokens]
        h = hashlib.sha256(h + b"".join(t.to_bytes(4, "little")
                                        for t in block)).digest()
        hashes.append(h.hex()[:32])
    return hashes


def block_keys(model, h, layers):
    return [f"{model}_{h}_{layer}_{kv}" for layer in range(layers)
            for kv in ("k", "v")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--master", default="127.0.0.1:50051")
    ap.add_argument("--metadata", default="http://127.0.0.1:8080/metadata")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--block-tokens", type=int, default=16)
    ap.add_argument("--block-bytes", type=int, default=64 << 10)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--model", default="demo-7b")
    a = ap.parse_args(argv)

    n_blocks = a.tokens // a.block_tokens
    prefill, decode = (MooncakeDistributedStore(), MooncakeDistributedStore())
    for s in (prefill, decode):
        rc = s.setup("127.0.0.1", a.metadata, 0, "64MB", "tcp", "", a.master)
        if rc != 0:
            print(f"setup failed: {rc}", file=sys.stderr)
            return 1

    src = KVBuffer(n_blocks, a.layers, a.block_bytes)
    dst = KVBuffer(n_blocks, a.layers, a.block_bytes)
    assert prefill.register_buffer(src.addr, len(src.mem)) == 0
    assert decode.register_buffer(dst.addr, len(dst.mem)) == 0

    # "Prefill": compute KV (random bytes stand in for it) for a prompt.
    rng = random.Random(1)
    tokens = [rng.randrange(32000) for _ in range(a.tokens)]
    src.mem[:] = rng.randbytes(len(src.mem))
    hashes = prefix_hashes(tokens, a.block_tokens)
    keys, ptrs, sizes = [], [], []
    for b, h in enumerate(hashes):
        for i, k in enumerate(block_keys(a.model, h, a.layers)):
            keys.append(k)
            ptrs.append(src.addr + src.offset(b, i // 2, i % 2))
            sizes.append(a.block_bytes)

    # Store only what is not there yet (a second run finds everything).
    have = prefill.batch_is_exist(keys)
    todo = [i for i, e in enumerate(have) if e != 1]
    cfg = ReplicateConfig()
    cfg.replica_num = 1
    if todo:
        res = prefill.batch_put_from([keys[i] for i in todo],
                                     [ptrs[i] for i in todo],
                                     [sizes[i] for i in todo], cfg)
        if any(r != 0 for r in res):
            print(f"batch_put_from: {res}", file=sys.stderr)
            return 1
    print(f"put {len(todo)} of {len(keys)} layer blocks "
          f"({len(hashes)} prefix blocks x {a.layers} layers x K/V)")

    # "Decode": the same prompt on another instance finds its prefix.
    dptrs = [dst.addr + (p - src.addr) for p in ptrs]
    got = decode.batch_get_into(keys, dptrs, sizes)
    if got != sizes:
        print(f"batch_get_into: {got}", file=sys.stderr)
        return 1
    if dst.mem != src.mem:
        print("bytes differ", file=sys.stderr)
        return 1
    print(f"got {len(keys)} layer blocks into the second buffer: verified")

    prefill.unregister_buffer(src.addr)
    decode.unregister_buffer(dst.addr)
    prefill.close()
    decode.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
