"""dango.engine.TransferEngine: two engines with P2PHANDSHAKE, every method,
over shared memory and over TCP (MC_FORCE_TCP=1), and the bad inputs."""

import os
import threading
import unittest

from dango.engine import TransferEngine, TransferOpcode, P2PHANDSHAKE

MB = 1 << 20


class EngineTest(unittest.TestCase):
    force_tcp = False

    @classmethod
    def setUpClass(cls):
        saved = os.environ.get("MC_FORCE_TCP")
        if cls.force_tcp:
            os.environ["MC_FORCE_TCP"] = "1"
        try:
            cls.a, cls.b = TransferEngine(), TransferEngine()
            for e in (cls.a, cls.b):
                assert e.initialize("127.0.0.1", P2PHANDSHAKE, "tcp", "") == 0
        finally:
            if saved is None:
                os.environ.pop("MC_FORCE_TCP", None)
            else:
                os.environ["MC_FORCE_TCP"] = saved
        cls.b_name = f"127.0.0.1:{cls.b.get_rpc_port()}"
        cls.src = cls.a.allocate_managed_buffer(4 * MB)
        cls.dst = cls.b.allocate_managed_buffer(4 * MB)
        assert cls.src != 0 and cls.dst != 0

    @classmethod
    def tearDownClass(cls):
        assert cls.a.free_managed_buffer(cls.src, 4 * MB) == 0
        assert cls.b.free_managed_buffer(cls.dst, 4 * MB) == 0
        cls.a.close()
        cls.b.close()

    def test_identity(self):
        self.assertGreater(self.a.get_rpc_port(), 0)
        self.assertEqual(self.b.get_session_id(), self.b_name)
        self.assertEqual(self.a.initialize("127.0.0.1", P2PHANDSHAKE), -1)
        self.assertEqual(int(TransferOpcode.READ), 0)
        self.assertEqual(TransferOpcode.Write, TransferOpcode.WRITE)
        self.assertEqual(self.a.get_first_buffer_address(self.b_name),
                         self.dst)

    def test_sync_write_read(self):
        data = os.urandom(MB)
        self.assertEqual(self.a.write_bytes_to_buffer(self.src, data, MB), 0)
        self.assertEqual(self.a.transfer_sync_write(self.b_name, self.src,
                                                    self.dst, MB), 0)
        self.assertEqual(self.b.read_bytes_from_buffer(self.dst, MB), data)
        self.assertEqual(self.a.write_bytes_to_buffer(self.src, bytes(MB),
                                                      MB), 0)
        self.assertEqual(self.a.transfer_sync_read(self.b_name, self.src,
                                                   self.dst, MB), 0)
        self.assertEqual(self.a.read_bytes_from_buffer(self.src, MB), data)
        self.assertEqual(self.a.transfer_sync(self.b_name, self.src + MB,
                                              self.dst, 100,
                                              TransferOpcode.READ), 0)
        self.assertEqual(self.a.read_bytes_from_buffer(self.src + MB, 100),
                         data[:100])

    def test_batches(self):
        blocks = [os.urandom(64 << 10) for _ in range(8)]
        for i, blk in enumerate(blocks):
            self.a.write_bytes_to_buffer(self.src + i * len(blk), blk)
        srcs = [self.src + i * (64 << 10) for i in range(8)]
        dsts = [self.dst + 2 * MB + i * (64 << 10) for i in range(8)]
        lens = [64 << 10] * 8
        self.assertEqual(self.a.batch_transfer_sync_write(self.b_name, srcs,
                                                          dsts, lens), 0)
        self.assertEqual(self.b.read_bytes_from_buffer(dsts[3], 64 << 10),
                         blocks[3])
        back = [self.src + 2 * MB + i * (64 << 10) for i in range(8)]
        self.assertEqual(self.a.batch_transfer_sync_read(self.b_name, back,
                                                         dsts, lens), 0)
        self.assertEqual(self.a.read_bytes_from_buffer(back[7], 64 << 10),
                         blocks[7])
        self.assertEqual(self.a.batch_transfer_sync(
            self.b_name, back, dsts, lens, TransferOpcode.WRITE), 0)
        ids = [self.a.batch_transfer_async_write(self.b_name, srcs, dsts,
                                                 lens),
               self.a.batch_transfer_async_read(self.b_name, back, dsts,
                                                lens),
               self.a.batch_transfer_async(self.b_name, back, dsts, lens,
                                           TransferOpcode.READ)]
        self.assertTrue(all(i > 0 for i in ids))
        self.assertEqual(self.a.get_batch_transfer_status(ids), 0)
        # Freed: a second wait on the same ids fails.
        self.assertEqual(self.a.get_batch_transfer_status(ids), -1)

    def test_submit_and_check(self):
        self.a.write_bytes_to_buffer(self.src, b"submit")
        bid = self.a.transfer_submit_write(self.b_name, self.src,
                                           self.dst + 3 * MB, 6)
        self.assertGreater(bid, 0)
        status = 0
        for _ in range(20000):  # bounded poll, at most ~20 s
            status = self.a.transfer_check_status(bid)
            if status != 0:
                break
            threading.Event().wait(0.001)
        self.assertEqual(status, 1)
        self.assertEqual(self.b.read_bytes_from_buffer(self.dst + 3 * MB, 6),
                         b"submit")
        self.assertEqual(self.a.transfer_check_status(bid), -1)  # freed
        self.assertEqual(self.a.transfer_check_status(123456789), -1)

    def test_register_memory(self):
        buf = bytearray(MB)
        self.assertEqual(self.a.register_memory(buf), 0)
        self.assertLess(self.a.register_memory(buf), 0)  # overlap
        buf[:5] = b"hello"
        import ctypes
        addr = ctypes.addressof((ctypes.c_char * MB).from_buffer(buf))
        self.assertEqual(self.a.transfer_sync_write(self.b_name, addr,
                                                    self.dst, 5), 0)
        self.assertEqual(self.b.read_bytes_from_buffer(self.dst, 5), b"hello")
        self.assertEqual(self.a.unregister_memory(addr), 0)
        self.assertLess(self.a.unregister_memory(addr), 0)
        bufs = [bytearray(4096) for _ in range(3)]
        self.assertEqual(self.a.batch_register_memory(bufs, [4096] * 3), 0)
        self.assertEqual(self.a.batch_unregister_memory(bufs), 0)

    def test_notifies_empty(self):
        self.assertEqual(self.b.get_notifies(), [])

    def test_bad_inputs(self):
        a = self.a
        # Unregistered local memory and a range past the peer's buffer.
        junk = bytearray(4096)
        self.assertEqual(a.transfer_sync_write(self.b_name, junk,
                                               self.dst, 4096), -1)
        self.assertEqual(a.transfer_sync_write(self.b_name, self.src,
                                               self.dst + 4 * MB - 10, 100),
                         -1)
        self.assertEqual(a.transfer_sync_write(self.b_name, self.src,
                                               0x1000, 100), -1)
        self.assertEqual(a.transfer_sync_write("127.0.0.1:1", self.src,
                                               self.dst, 100), -1)
        self.assertEqual(a.batch_transfer_async_write("127.0.0.1:1",
                                                      [self.src], [self.dst],
                                                      [100]), 0)
        # Addresses outside what this engine registered: no fault.
        self.assertLess(a.write_bytes_to_buffer(0x1000, b"x"), 0)
        with self.assertRaises(ValueError):
            a.read_bytes_from_buffer(0x1000, 10)
        with self.assertRaises(ValueError):
            a.read_bytes_from_buffer(self.src + 4 * MB - 1, 2)
        self.assertLess(a.free_managed_buffer(0x1000, 10), 0)
        with self.assertRaises(TypeError):
            a.transfer_sync_write(b"bytes", self.src, self.dst, 1)
        with self.assertRaises(ValueError):
            a.transfer_sync_write(self.b_name, self.src, self.dst, -1)
        with self.assertRaises(TypeError):
            a.transfer_sync_write(self.b_name, "x", self.dst, 1)
        with self.assertRaises(ValueError):
            a.batch_transfer_sync_write(self.b_name, [self.src], [], [1])
        with self.assertRaises(ValueError):
            a.transfer_sync(self.b_name, self.src, self.dst, 1, 7)
        self.assertEqual(a.allocate_managed_buffer(0), 0)
        # Before initialize and after close.
        e = TransferEngine()
        self.assertEqual(e.get_rpc_port(), -1)
        self.assertEqual(e.transfer_sync_write(self.b_name, self.src,
                                               self.dst, 1), -1)
        self.assertEqual(e.allocate_managed_buffer(4096), 0)
        self.assertEqual(e.initialize("127.0.0.1", "etcd-host:2379"), -1)
        self.assertEqual(e.initialize("127.0.0.1", P2PHANDSHAKE), 0)
        e.close()
        self.assertEqual(e.get_rpc_port(), -1)
        self.assertEqual(e.register_memory(bytearray(10)), -1)


class EngineTcpTest(EngineTest):
    force_tcp = True


if __name__ == "__main__":
    unittest.main(verbosity=2)
