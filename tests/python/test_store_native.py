"""DistributedStore (the native class) and many threads on one store."""

import threading
import unittest

from dango_cluster import Cluster

import dango
from dango.store import DistributedStore, ReplicateConfig

try:
    import numpy as np
except ImportError:
    np = None

cluster = None


def setUpModule():
    global cluster
    cluster = Cluster(nodes=1, segment_size="256m")


def tearDownModule():
    cluster.close()


class NativeStoreTest(unittest.TestCase):
    def setUp(self):
        self.s = DistributedStore(cluster.master, cluster.metadata,
                                  segment_size=0, local_buffer_size="32 MB",
                                  options={"STORE_RPC_TIMEOUT": "5s"})

    def tearDown(self):
        self.s.remove_all(force=True)
        self.s.close()

    def test_round_trip_and_errors(self):
        s = self.s
        self.assertTrue(s.health())
        self.assertIn(":", s.name)
        s.put("k", b"value", replica_num=1)
        self.assertEqual(s.get("k"), b"value")
        self.assertTrue(s.exists("k"))
        self.assertEqual(s.size("k"), 5)
        with self.assertRaises(dango.DangoError) as cm:
            s.put("k", b"again")
        self.assertEqual(cm.exception.name, "DANGO_EOBJ_EXISTS")
        self.assertEqual(cm.exception.code, -10303)
        self.assertIn("DANGO_EOBJ_EXISTS", str(cm.exception))
        s.upsert("k", b"replaced", config=ReplicateConfig())
        self.assertEqual(s.get("k"), b"replaced")
        with self.assertRaises(KeyError) as cm:
            s.get("missing")
        self.assertIsInstance(cm.exception, dango.ObjectNotFoundError)
        self.assertEqual(cm.exception.name, "DANGO_ENO_OBJECT")
        with self.assertRaises(TypeError):
            s.put("k2", b"v", config=ReplicateConfig(), replica_num=1)
        with self.assertRaises(dango.DangoError) as cm:
            s.remove("k")  # the gets above hold a read lease
        self.assertEqual(cm.exception.name, "DANGO_ELEASE_HELD")
        s.remove("k", force=True)
        self.assertFalse(s.exists("k"))
        with self.assertRaises(dango.ObjectNotFoundError):
            s.remove("k")

    def test_batches_and_info(self):
        s = self.s
        keys = [f"b{i}" for i in range(6)]
        res = s.batch_put(keys, [bytes([i]) * 100 for i in range(6)])
        self.assertEqual(res, [None] * 6)
        res = s.batch_put(keys[:1], [b"x"])
        self.assertIsInstance(res[0], dango.DangoError)
        self.assertEqual(res[0].name, "DANGO_EOBJ_EXISTS")
        got = s.batch_get(keys + ["nope"])
        self.assertEqual(got[:6], [bytes([i]) * 100 for i in range(6)])
        self.assertIsInstance(got[6], dango.ObjectNotFoundError)
        self.assertEqual(s.batch_exists(keys[:2] + ["nope"]),
                         [True, True, False])
        out = [bytearray(100) for _ in range(6)]
        self.assertEqual(s.batch_get_into(keys, out), [100] * 6)
        self.assertEqual(bytes(out[3]), bytes([3]) * 100)
        st = s.stat("b0")
        self.assertEqual(st["size"], 100)
        self.assertEqual(len(st["replicas"]), 1)
        self.assertFalse(st["on_disk"])
        self.assertGreaterEqual(s.pool_stat()["keys"], 6)
        self.assertEqual(s.pool_stat()["disk_keys"], 0)  # no disk tier here
        listed = dict(s.list_keys("b"))
        self.assertEqual(listed, {k: 100 for k in keys})
        self.assertEqual(s.remove_by_regex("^b[0-2]$", force=True), 3)
        rem = s.batch_remove(keys, force=True)
        self.assertEqual(rem[3:], [None] * 3)
        self.assertEqual(rem[0].name, "DANGO_ENO_OBJECT")

    def test_registered_buffers(self):
        s = self.s
        src = bytearray(1 << 20)
        dst = bytearray(1 << 20)
        s.register_buffer(src)
        s.register_buffer(dst)
        src[:4096] = b"z" * 4096
        s.put_from("r", src, 4096)
        self.assertEqual(s.get_into("r", dst), 4096)
        self.assertEqual(dst[:4096], src[:4096])
        keys = [f"r{i}" for i in range(4)]
        views = [memoryview(src)[i * 1000:(i + 1) * 1000] for i in range(4)]
        self.assertEqual(s.batch_put_from(keys, views), [None] * 4)
        for v in views:
            v.release()
        self.assertEqual(s.batch_get_into(keys, [dst] * 4, [1000] * 4),
                         [1000] * 4)
        h = s.get_buffer("r")
        self.assertEqual(bytes(h), src[:4096])
        s.unregister_buffer(src)
        s.unregister_buffer(dst)
        with self.assertRaises(dango.DangoError) as cm:
            s.unregister_buffer(src)
        self.assertEqual(cm.exception.name, "DANGO_ENOTREG")

    @unittest.skipIf(np is None, "numpy is not installed")
    def test_numpy(self):
        a = np.random.default_rng(7).integers(0, 255, size=(64, 4096),
                                               dtype=np.uint8)
        self.s.put("np", a)
        b = np.empty_like(a)
        self.assertEqual(self.s.get_into("np", b), a.nbytes)
        np.testing.assert_array_equal(a, b)
        with self.assertRaises(ValueError):
            self.s.put("nc", a[:, ::2])  # not contiguous

    def test_context_manager_and_close(self):
        with DistributedStore(cluster.master, cluster.metadata,
                              segment_size=0) as s:
            s.put("cm", b"1")
            self.assertFalse(s.closed)
        self.assertTrue(s.closed)
        for call in (lambda: s.get("cm"), lambda: s.put("x", b"1"),
                     lambda: s.exists("cm"), lambda: s.name):
            with self.assertRaises(ValueError):
                call()
        s.close()  # twice is fine

    def test_many_threads(self):
        """16 threads x 50 puts/gets each, with values checked, while the
        GIL is released inside every call."""
        errors = []
        n_threads, n_ops = 16, 50

        def work(t):
            try:
                for i in range(n_ops):
                    k = f"t{t}/{i}"
                    v = (f"{t}:{i}:".encode() * 64)[:1000 + i]
                    self.s.put(k, v)
                    if self.s.get(k) != v:
                        errors.append(f"{k}: wrong value")
                    out = bytearray(len(v))
                    if self.s.get_into(k, out) != len(v) or out != v:
                        errors.append(f"{k}: get_into")
                keys = [f"t{t}/{i}" for i in range(n_ops)]
                if self.s.batch_exists(keys) != [True] * n_ops:
                    errors.append(f"t{t}: batch_exists")
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(t,))
                   for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertFalse(any(th.is_alive() for th in threads))
        self.assertEqual(errors, [])
        self.assertEqual(len(self.s.list_keys("t")), n_threads * n_ops)

    def test_close_waits_for_calls_in_flight(self):
        s = DistributedStore(cluster.master, cluster.metadata, segment_size=0)
        stop = threading.Event()
        seen = []

        def reader():
            while not stop.is_set():
                try:
                    s.put(f"c{threading.get_ident()}/{len(seen)}", b"x" * 4096)
                    seen.append(1)
                except ValueError:
                    return  # closed: the documented error
                except dango.DangoError:
                    pass

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for th in threads:
            th.start()
        for _ in range(2000):  # at most 20 s
            if len(seen) >= 20:
                break
            threading.Event().wait(0.01)
        self.assertGreaterEqual(len(seen), 20)
        s.close()
        stop.set()
        for th in threads:
            th.join(30)
        self.assertFalse(any(th.is_alive() for th in threads))
        self.assertTrue(s.closed)


if __name__ == "__main__":
    unittest.main(verbosity=2)
