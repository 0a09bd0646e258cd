"""examples/kv_connector.py against a real cluster, twice: the second run
finds every block already stored and still reads them back intact."""

import os
import subprocess
import sys
import unittest

from dango_cluster import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "kv_connector.py")


class ExampleTest(unittest.TestCase):
    def test_kv_connector(self):
        with Cluster(nodes=2, segment_size="128m") as cl:
            argv = [sys.executable, EXAMPLE, "--master", cl.master,
                    "--metadata", cl.metadata]
            first = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=120)
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertIn("put 128 of 128 layer blocks", first.stdout)
            self.assertIn("verified", first.stdout)
            again = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=120)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertIn("put 0 of 128 layer blocks", again.stdout)
            self.assertIn("verified", again.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
