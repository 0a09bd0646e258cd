"""Bad input to both store classes: wrong types, negative and oversized
sizes, buffers smaller than the object, unregistered addresses, calls
before setup and after close, a dead master. Each gives TypeError /
ValueError or the documented code, within the configured timeouts."""

import os
import time
import unittest

from dango_cluster import Cluster

import dango
from dango.store import (DistributedStore, MooncakeDistributedStore,
                         ReplicateConfig)

INVALID_PARAMS = -600
BUFFER_OVERFLOW = -10
OBJECT_NOT_FOUND = -704


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(nodes=1, segment_size="64m")
        cls.s = MooncakeDistributedStore()
        assert cls.s.setup("127.0.0.1", cls.cluster.metadata, 0, "16MB",
                           "tcp", "", cls.cluster.master) == 0
        assert cls.s.put("obj", b"x" * 1000) == 0

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        cls.cluster.close()

    def test_wrong_types(self):
        s = self.s
        for call in (lambda: s.put(1, b"x"), lambda: s.put("k", "str"),
                     lambda: s.put("k", 12345), lambda: s.get(None),
                     lambda: s.is_exist(3.5), lambda: s.get_batch("abc"),
                     lambda: s.batch_put_from(["k"], ["x"], [1]),
                     lambda: s.put("k", b"x", config="cfg"),
                     lambda: s.setup(1, 2, 3, 4, 5, 6, 7),
                     lambda: s.setup(bogus=1),
                     lambda: s.put_parts("k", 1, 2),
                     lambda: s.register_buffer("x", 10),
                     lambda: s.get_into_ranges([1], [["k"]], [[["a"]]],
                                               [[[0]]], [[[1]]])):
            with self.assertRaises(TypeError):
                call()
        bad_cfg = ReplicateConfig()
        bad_cfg.replica_num = "two"
        with self.assertRaises(TypeError):
            s.put("k", b"x", bad_cfg)

    def test_bad_values(self):
        s = self.s
        for call in (lambda: s.get_into("obj", 4096, -1),
                     lambda: s.put_from("k", -5, 10),
                     lambda: s.put_from("k", 0, 10),
                     lambda: s.register_buffer(4096, -1),
                     lambda: s.put("", b"x"), lambda: s.put("a\0b", b"x"),
                     lambda: s.put("k" * 5000, b"x"),
                     lambda: s.get_into("obj", 2 ** 64, 10),
                     lambda: s.get_into("obj", bytearray(10), 100),
                     lambda: s.batch_get_into(["a", "b"], [bytearray(1)],
                                              [1]),
                     lambda: s.batch_put_from_multi_buffers(["k"], [[]], [[]]),
                     lambda: s.put("k", b"x", ReplicateConfig(replica_num=99)),
                     lambda: s.setup({"global_segment_size": "lots"})):
            with self.assertRaises(ValueError):
                call()
        # Sizes the library refuses: a documented code, not an exception.
        d = MooncakeDistributedStore()
        self.assertEqual(d.setup("127.0.0.1", self.cluster.metadata, 10,
                                 "16MB", "tcp", "", self.cluster.master),
                         INVALID_PARAMS)  # below 1 KiB
        self.assertEqual(d.setup("127.0.0.1", self.cluster.metadata,
                                 "2 TB", "16MB", "tcp", "",
                                 self.cluster.master), INVALID_PARAMS)

    def test_small_buffers_and_unregistered(self):
        s = self.s
        small = bytearray(10)
        self.assertEqual(s.get_into("obj", small), BUFFER_OVERFLOW)
        # Raw addresses must be registered: checked, never dereferenced.
        for addr in (0x1000, 0xdead0000):
            self.assertEqual(s.get_into("obj", addr, 1000), INVALID_PARAMS)
            self.assertEqual(s.put_from("new", addr, 1000), INVALID_PARAMS)
            self.assertEqual(s.batch_put_from(["n1"], [addr], [10]),
                             [INVALID_PARAMS])
            self.assertEqual(s.batch_get_into(["obj"], [addr], [1000]),
                             [INVALID_PARAMS])
            self.assertEqual(s.upsert_from("obj", addr, 10), INVALID_PARAMS)
            self.assertEqual(s.batch_get_into_multi_buffers(
                ["obj"], [[addr]], [[1000]]), [INVALID_PARAMS])
            self.assertEqual(s.get_into_ranges([addr], [["obj"]], [[[0]]],
                                               [[[0]]], [[[10]]]),
                             [[INVALID_PARAMS]])
        self.assertLess(s.unregister_buffer(0x1000), 0)
        self.assertEqual(s.get("obj"), b"x" * 1000)

    def test_before_setup_and_after_close(self):
        d = MooncakeDistributedStore()
        self.assertEqual(d.health_check(), 1)
        self.assertEqual(d.get_hostname(), "")
        self.assertEqual(d.put("k", b"v"), -1)
        self.assertEqual(d.get("k"), b"")
        self.assertIsNone(d.get_buffer("k"))
        self.assertEqual(d.is_exist("k"), -1)
        self.assertEqual(d.batch_is_exist(["a", "b"]), [-1, -1])
        self.assertEqual(d.batch_put_from(["a"], [4096], [1]), [-1])
        self.assertEqual(d.get_replica_desc("k"), [])
        self.assertEqual(d.remove_all(), -1)
        self.assertEqual(d.close(), 0)
        n = DistributedStore(self.cluster.master, self.cluster.metadata,
                             segment_size=0)
        n.close()
        with self.assertRaises(ValueError):
            n.get("obj")
        with self.assertRaises(ValueError):
            n.register_buffer(bytearray(10))


class DeadMasterTest(unittest.TestCase):
    def test_dead_master(self):
        saved = dict(os.environ)
        os.environ["DANGO_STORE_RPC_TIMEOUT"] = "2s"
        os.environ["DANGO_STORE_CONNECT_TIMEOUT"] = "1s"
        os.environ["DANGO_STORE_PING_INTERVAL"] = "200ms"
        cluster = Cluster(nodes=1, segment_size="64m")
        try:
            s = MooncakeDistributedStore()
            self.assertEqual(s.setup("127.0.0.1", cluster.metadata, 0,
                                     "16MB", "tcp", "", cluster.master), 0)
            n = DistributedStore(cluster.master, cluster.metadata,
                                 segment_size=0)
            self.assertEqual(s.put("k", b"v"), 0)
            cluster.stop_master()
            t0 = time.monotonic()
            self.assertLess(s.put("k2", b"v"), 0)
            self.assertLess(s.is_exist("k"), 0)
            self.assertEqual(s.get("k"), b"")
            with self.assertRaises(dango.DangoError):
                n.put("k3", b"v")
            self.assertLess(time.monotonic() - t0, 30)
            health = 0
            for _ in range(100):  # the pings notice within ~1 s
                health = s.health_check()
                if health == 2:
                    break
                time.sleep(0.1)
            self.assertEqual(health, 2)
            for _ in range(100):  # each client's own pings notice
                if not n.health():
                    break
                time.sleep(0.1)
            self.assertFalse(n.health())
            t0 = time.monotonic()
            s.close()
            n.close()
            self.assertLess(time.monotonic() - t0, 30)
        finally:
            cluster.close()
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    unittest.main(verbosity=2)
