"""MooncakeDistributedStore against a real master and node: every method,
Mooncake's return conventions, numpy round trips."""

import os
import unittest

from dango_cluster import Cluster

import dango.store as ds
from dango.store import (MooncakeDistributedStore, ReplicateConfig,
                         ReplicaStatus, SoftPinAction)

try:
    import numpy as np
except ImportError:  # numpy tests are skipped, with the reason
    np = None

# Mooncake's ErrorCode numbers (spec store.md section 9).
OBJECT_NOT_FOUND = -704
INVALID_PARAMS = -600
BUFFER_OVERFLOW = -10
NOT_SUPPORTED = -1012
UNAVAILABLE_IN_CURRENT_MODE = -1011

cluster = None


def setUpModule():
    global cluster
    cluster = Cluster(nodes=2, segment_size="128m")


def tearDownModule():
    cluster.close()


def new_store(**kw):
    s = MooncakeDistributedStore()
    rc = s.setup("127.0.0.1", cluster.metadata, kw.get("segment", 0),
                 kw.get("buffer", "32MB"), "tcp", "", cluster.master)
    assert rc == 0, rc
    return s


class Buffer:
    """Registered memory a test owns (a bytearray, addressed as an int)."""

    def __init__(self, store, size):
        self.store = store
        self.mem = bytearray(size)
        self.view = memoryview(self.mem)
        import ctypes
        self.addr = ctypes.addressof(
            (ctypes.c_char * size).from_buffer(self.mem))
        assert store.register_buffer(self.addr, size) == 0

    def close(self):
        assert self.store.unregister_buffer(self.addr) == 0
        self.view.release()


class MooncakeStoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = new_store()

    @classmethod
    def tearDownClass(cls):
        cls.s.remove_all(True)
        cls.s.close()

    def key(self, name):
        return f"{self.id()}/{name}"

    def test_setup_forms_and_health(self):
        self.assertEqual(self.s.health_check(), 0)
        self.assertNotEqual(self.s.get_hostname(), "")
        # A second setup on a live handle is refused, as in Mooncake.
        self.assertEqual(self.s.setup("127.0.0.1", cluster.metadata), -1)
        # The dict form with human-readable sizes, with and without space.
        for seg in ("16MB", "16 MB"):
            d = MooncakeDistributedStore()
            self.assertEqual(d.setup({
                "local_hostname": "127.0.0.1",
                "metadata_server": cluster.metadata,
                "global_segment_size": seg,
                "local_buffer_size": "8 MB",
                "protocol": "tcp",
                "device_name": "",
                "master_server_address": cluster.master}), 0)
            self.assertEqual(d.health_check(), 0)
            k = self.key(seg)
            self.assertEqual(d.put(k, b"dict"), 0)
            self.assertEqual(self.s.get(k), b"dict")
            self.assertEqual(d.close(), 0)
            self.assertEqual(d.health_check(), 1)
        # Keywords as SGLang passes them.
        d = MooncakeDistributedStore()
        self.assertEqual(d.setup(local_hostname="127.0.0.1",
                                 metadata_server=cluster.metadata,
                                 global_segment_size=0,
                                 local_buffer_size=16 << 20,
                                 protocol="tcp", rdma_devices="",
                                 master_server_addr=cluster.master,
                                 enable_ssd_offload=False,
                                 tenant_id="default"), 0)
        d.close()
        # Unknown transport and a disk tier: documented codes.
        d = MooncakeDistributedStore()
        self.assertEqual(d.setup("127.0.0.1", cluster.metadata, 0, "8MB",
                                 "rdma", "", cluster.master),
                         UNAVAILABLE_IN_CURRENT_MODE)
        self.assertEqual(d.setup("127.0.0.1", cluster.metadata, 0, "8MB",
                                 "tcp", "", cluster.master,
                                 enable_ssd_offload=True), NOT_SUPPORTED)
        self.assertEqual(d.health_check(), 1)

    def test_setup_from_environment(self):
        saved = dict(os.environ)
        try:
            os.environ["MOONCAKE_MASTER"] = cluster.master
            os.environ["MOONCAKE_TE_META_DATA_SERVER"] = cluster.metadata
            os.environ["MOONCAKE_LOCAL_HOSTNAME"] = "127.0.0.1"
            os.environ["MOONCAKE_GLOBAL_SEGMENT_SIZE"] = "0"
            os.environ["MOONCAKE_LOCAL_BUFFER_SIZE"] = "8mb"
            d = MooncakeDistributedStore()
            self.assertEqual(d.setup(), 0)
            self.assertEqual(d.health_check(), 0)
            d.close()
            # A wrong master in the variable is used (and fails).
            os.environ["MOONCAKE_MASTER"] = "127.0.0.1:1"
            d = MooncakeDistributedStore()
            self.assertEqual(d.setup(), 0)  # mounts once the master answers
            self.assertLess(d.put(self.key("e"), b"x"), 0)
            d.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def test_put_get_exist_size_remove(self):
        k = self.key("a")
        self.assertEqual(self.s.get(k), b"")
        self.assertEqual(self.s.is_exist(k), 0)
        self.assertEqual(self.s.get_size(k), OBJECT_NOT_FOUND)
        self.assertEqual(self.s.put(k, b"hello"), 0)
        self.assertEqual(self.s.put(k, b"other"), 0)  # exists: success
        self.assertEqual(self.s.get(k), b"hello")
        self.assertEqual(self.s.is_exist(k), 1)
        self.assertEqual(self.s.get_size(k), 5)
        self.assertEqual(self.s.remove(k, True), 0)
        self.assertEqual(self.s.remove(k), OBJECT_NOT_FOUND)
        self.assertEqual(self.s.put(k, b""), INVALID_PARAMS)

    def test_buffer_protocol_values(self):
        for i, v in enumerate((b"bytes", bytearray(b"bytearray"),
                               memoryview(b"memoryview"))):
            k = self.key(str(i))
            self.assertEqual(self.s.put(k, v), 0)
            self.assertEqual(self.s.get(k), bytes(v))

    def test_put_parts_and_upserts(self):
        k = self.key("p")
        self.assertEqual(self.s.put_parts(k, b"ab", bytearray(b"cd"),
                                          memoryview(b"ef")), 0)
        self.assertEqual(self.s.get(k), b"abcdef")
        self.assertEqual(self.s.upsert(k, b"new value"), 0)
        self.assertEqual(self.s.get(k), b"new value")
        self.assertEqual(self.s.upsert_parts(k, b"x", b"y",
                                             config=ReplicateConfig()), 0)
        self.assertEqual(self.s.get(k), b"xy")
        keys = [self.key(f"ub{i}") for i in range(3)]
        self.assertEqual(self.s.upsert_batch(keys, [b"1", b"22", b"333"]), 0)
        self.assertEqual(self.s.get_batch(keys), [b"1", b"22", b"333"])
        self.assertEqual(self.s.upsert_batch(keys, [b"a", b"b", b"c"]), 0)
        self.assertEqual(self.s.get_batch(keys), [b"a", b"b", b"c"])

    def test_put_batch_get_batch(self):
        keys = [self.key(f"b{i}") for i in range(10)]
        vals = [bytes([i]) * (i + 1) for i in range(10)]
        self.assertEqual(self.s.put_batch(keys, vals), 0)
        self.assertEqual(self.s.get_batch(keys + [self.key("none")]),
                         vals + [b""])
        self.assertEqual(self.s.batch_is_exist(keys[:2] + [self.key("n")]),
                         [1, 1, 0])
        self.assertEqual(self.s.batch_remove(keys[:2] + [self.key("n")],
                                             True), [0, 0, OBJECT_NOT_FOUND])

    def test_get_buffer(self):
        k = self.key("gb")
        self.assertIsNone(self.s.get_buffer(k))
        self.assertEqual(self.s.put(k, b"0123456789"), 0)
        h = self.s.get_buffer(k)
        self.assertIsInstance(h, ds.BufferHandle)
        self.assertEqual(h.size(), 10)
        self.assertEqual(len(h), 10)
        self.assertNotEqual(h.ptr(), 0)
        mv = memoryview(h)
        self.assertEqual(mv.tobytes(), b"0123456789")
        with self.assertRaises(BufferError):
            h.release()  # a view is alive
        mv.release()
        h.release()
        self.assertEqual(h.size(), 0)
        with self.assertRaises(ValueError):
            memoryview(h)
        hs = self.s.batch_get_buffer([k, self.key("none")])
        self.assertEqual(bytes(hs[0]), b"0123456789")
        self.assertIsNone(hs[1])

    def test_zero_copy(self):
        src, dst = Buffer(self.s, 1 << 20), Buffer(self.s, 1 << 20)
        try:
            for i in range(8):
                src.mem[i * 4096:(i + 1) * 4096] = bytes([i + 1]) * 4096
            k = self.key("z")
            self.assertEqual(self.s.put_from(k, src.addr, 4096), 0)
            self.assertEqual(self.s.get_into(k, dst.addr, 1 << 20), 4096)
            self.assertEqual(dst.mem[:4096], src.mem[:4096])
            self.assertEqual(self.s.get_into(k, dst.addr, 100),
                             BUFFER_OVERFLOW)
            self.assertEqual(self.s.upsert_from(k, src.addr + 4096, 4096), 0)
            self.assertEqual(self.s.get(k), bytes(src.mem[4096:8192]))
            keys = [self.key(f"z{i}") for i in range(8)]
            ptrs = [src.addr + i * 4096 for i in range(8)]
            self.assertEqual(self.s.batch_put_from(keys, ptrs, [4096] * 8),
                             [0] * 8)
            dptrs = [dst.addr + i * 4096 for i in range(8)]
            dst.mem[:] = bytes(len(dst.mem))
            self.assertEqual(self.s.batch_get_into(keys, dptrs, [4096] * 8),
                             [4096] * 8)
            self.assertEqual(dst.mem[:32768], src.mem[:32768])
            self.assertEqual(self.s.batch_upsert_from(keys[:2], ptrs[2:4],
                                                      [4096, 4096]), [0, 0])
            self.assertEqual(self.s.get(keys[0]), bytes(src.mem[8192:12288]))
            # Scatter-gather: one key from two pieces, back into three.
            mk = [self.key("m0"), self.key("m1")]
            self.assertEqual(self.s.batch_put_from_multi_buffers(
                mk, [[src.addr, src.addr + 4096], [src.addr + 8192]],
                [[100, 200], [300]]), [0, 0])
            self.assertEqual(self.s.get(mk[0]),
                             bytes(src.mem[:100] + src.mem[4096:4296]))
            dst.mem[:] = bytes(len(dst.mem))
            self.assertEqual(self.s.batch_get_into_multi_buffers(
                mk, [[dst.addr, dst.addr + 1000, dst.addr + 2000],
                     [dst.addr + 3000]], [[50, 50, 200], [300]]), [300, 300])
            self.assertEqual(dst.mem[:50], src.mem[:50])
            self.assertEqual(dst.mem[1000:1050], src.mem[50:100])
            self.assertEqual(dst.mem[2000:2200], src.mem[4096:4296])
            self.assertEqual(dst.mem[3000:3300], src.mem[8192:8492])
            # Ranges of two keys into one buffer.
            dst.mem[:] = bytes(len(dst.mem))
            res = self.s.get_into_ranges(
                [dst.addr], [[keys[3], keys[4]]],
                [[[0, 100], [500]]], [[[10, 20], [0]]], [[[5, 6], [7]]])
            self.assertEqual(res, [[11, 7]])
            self.assertEqual(dst.mem[0:5], src.mem[3 * 4096 + 10:][:5])
            self.assertEqual(dst.mem[100:106], src.mem[3 * 4096 + 20:][:6])
            self.assertEqual(dst.mem[500:507], src.mem[4 * 4096:][:7])
            res = self.s.get_into_ranges([dst.addr], [[keys[3]]], [[[0]]],
                                         [[[4000]]], [[[200]]])
            self.assertLess(res[0][0], 0)  # past the end of the object
        finally:
            src.close()
            dst.close()

    def test_register_buffer_objects(self):
        arr = bytearray(64 << 10)
        self.assertEqual(self.s.register_buffer(arr), 0)
        with self.assertRaises(BufferError):
            arr.extend(b"x")  # held while registered
        arr[:3] = b"abc"
        k = self.key("r")
        self.assertEqual(self.s.put_from(k, arr, 3), 0)
        out = bytearray(16)
        self.assertEqual(self.s.get_into(k, out), 3)
        self.assertEqual(out[:3], b"abc")
        self.assertEqual(self.s.unregister_buffer(arr), 0)
        arr.extend(b"x")  # released
        self.assertLess(self.s.unregister_buffer(arr), 0)

    def test_replica_desc_and_config(self):
        k = self.key("d")
        cfg = ReplicateConfig()
        cfg.replica_num = 2
        cfg.with_soft_pin = True
        cfg.soft_pin_ttl_ms = 60000
        cfg.preferred_segment = cluster.nodes[0][1]
        self.assertEqual(self.s.put(k, b"replicated", cfg), 0)
        descs = self.s.get_replica_desc(k)
        self.assertEqual(len(descs), 2)
        names = {d.segment_name for d in descs}
        self.assertEqual(names, {n for _, n in cluster.nodes})
        for d in descs:
            self.assertTrue(d.is_memory_replica())
            self.assertFalse(d.is_disk_replica())
            self.assertFalse(d.is_local_disk_replica())
            self.assertEqual(d.status, ReplicaStatus.COMPLETE)
            self.assertEqual(d.size, 10)
        got = self.s.batch_get_replica_desc([k, self.key("none")])
        self.assertEqual(len(got[k]), 2)
        self.assertEqual(got[self.key("none")], [])
        hard = ReplicateConfig(with_hard_pin=True,
                               soft_pin_action=SoftPinAction.DISABLE)
        k2 = self.key("hard")
        self.assertEqual(self.s.put(k2, b"pinned", hard), 0)
        self.assertLess(self.s.remove(k2), 0)  # hard pinned: force only
        self.assertEqual(self.s.is_exist(k2), 1)
        self.assertEqual(self.s.remove(k2, True), 0)
        self.assertEqual(self.s.is_exist(k2), 0)

    def test_remove_by_regex_and_all(self):
        keys = [self.key(f"rx{i}") for i in range(5)]
        self.assertEqual(self.s.put_batch(keys, [b"v"] * 5), 0)
        self.assertEqual(self.s.remove_by_regex(self.key("rx[0-2]$"), True),
                         3)
        self.assertEqual(self.s.batch_is_exist(keys), [0, 0, 0, 1, 1])
        other = new_store()
        try:
            self.assertGreaterEqual(other.remove_all(True), 2)
            self.assertEqual(self.s.batch_is_exist(keys), [0] * 5)
        finally:
            other.close()

    @unittest.skipIf(np is None, "numpy is not installed")
    def test_numpy_round_trip(self):
        a = np.arange(256 * 1024, dtype=np.float32).reshape(256, 1024)
        out = np.zeros_like(a)
        self.assertEqual(self.s.register_buffer(a.ctypes.data, a.nbytes), 0)
        self.assertEqual(self.s.register_buffer(out.ctypes.data, out.nbytes),
                         0)
        try:
            keys = [self.key(f"np{i}") for i in range(4)]
            rows = a.nbytes // 4
            ptrs = [a.ctypes.data + i * rows for i in range(4)]
            self.assertEqual(self.s.batch_put_from(keys, ptrs, [rows] * 4),
                             [0] * 4)
            optrs = [out.ctypes.data + i * rows for i in range(4)]
            self.assertEqual(self.s.batch_get_into(keys, optrs, [rows] * 4),
                             [rows] * 4)
            np.testing.assert_array_equal(a, out)
            # numpy arrays through the buffer protocol, no address.
            k = self.key("npbuf")
            self.assertEqual(self.s.put(k, a[3]), 0)
            back = np.frombuffer(self.s.get(k), dtype=np.float32)
            np.testing.assert_array_equal(back, a[3])
            h = self.s.get_buffer(k)
            np.testing.assert_array_equal(
                np.frombuffer(h, dtype=np.float32), a[3])
        finally:
            self.assertEqual(self.s.unregister_buffer(a.ctypes.data), 0)
            self.assertEqual(self.s.unregister_buffer(out.ctypes.data), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
