#!/usr/bin/env python3
"""Layering gate for Dango (docs/design/layers.md, STYLE.md C.2).

Parses every `#include "..."` and `#include <dango/...>` line of the library
sources and rejects edges that point up or sideways in the module DAG:

    common <- net <- transport <- xfer <- store/p2p <- conductor
                 ^ <- metadata  <-/

Checked trees:
  src/<module>/**.{c,h}        the module's own rules (below)
  tests/unit/<module>/**       the same rules as src/<module>
  include/dango/*.h            only <dango/...> and system headers, and only
                               public headers of the header's own or a lower
                               module
  apps/ bench/ tools/ tests/   (everything else, and python/, the Python
                               extension) no module-private header
                               (*_int.h, *.inl.h) of any module

Rules for a file of module M:
  - a quoted include resolved to src/X/... is an edge M -> X and must be M
    itself or in ALLOWED[M]; generated protobuf headers (*.pb-c.h) belong
    to net;
  - a quoted include of another module's private header (*_int.h, *.inl.h)
    is forbidden even where the edge is allowed; inside src/transport a
    backend directory (tcp/, shm/, file/, ...) keeps its private headers to
    itself;
  - <dango/X.h> public headers are allowed unless they belong to a module
    that M may not depend on (xfer.h from transport, ...); src/common may
    include only <dango/common.h>, <dango/error.h>, <dango/log.h> and
    <dango/config.h>; the umbrella <dango/dango.h> is for applications only.

Usage:
  tools/check_layers.py [--root DIR]   check the tree (exit 1 on violations)
  tools/check_layers.py --self-test    check that the gate catches bad edges

Standard library only; runs on the python3 of a stock Debian 12.
"""

import argparse
import os
import re
import sys
import tempfile

# Allowed dependencies of each module, downward only (STYLE.md C.2).
ALLOWED = {
    "common": set(),
    "net": {"common"},
    "transport": {"net", "common"},
    "metadata": {"net", "common"},
    "xfer": {"transport", "metadata", "net", "common"},
    "store": {"xfer", "transport", "metadata", "net", "common"},
    "p2p": {"xfer", "transport", "metadata", "net", "common"},
    "conductor": {"store", "p2p", "xfer", "transport", "metadata", "net",
                  "common"},
}
MODULES = set(ALLOWED)

# Public headers and the module each belongs to.
PUBLIC_HEADER_MODULE = {
    "common.h": "common",
    "error.h": "common",
    "log.h": "common",
    "config.h": "common",
    "transport.h": "transport",
    "metadata.h": "metadata",
    "xfer.h": "xfer",
    "store.h": "store",
    "store_master.h": "store",
    "mooncake_store_c.h": "store",
    "p2p.h": "p2p",
    "conductor.h": "conductor",
}
# The umbrella header pulls in every module: applications only.
UMBRELLA = "dango.h"
COMMON_PUBLIC_OK = {"common.h", "error.h", "log.h", "config.h"}

# Subdirectories of src/transport that are backends (each keeps its
# private headers to itself).
TRANSPORT_MODULE = "transport"

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCE_EXT = (".c", ".h")


def is_private_header(path):
    base = os.path.basename(path)
    return base.endswith("_int.h") or base.endswith(".inl.h")


def iter_sources(top):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(SOURCE_EXT):
                yield os.path.join(dirpath, name)


def iter_includes(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                m = INCLUDE_RE.match(line)
                if m:
                    yield lineno, m.group(1), m.group(2).strip()
    except OSError as e:
        print(f"{path}: cannot read: {e}", file=sys.stderr)


class Checker:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.src = os.path.join(self.root, "src")
        self.violations = []
        self.files = 0
        self.edges = 0

    # ---------- helpers ----------

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def report(self, path, lineno, module, target, why="forbidden"):
        self.violations.append(
            f"{self.rel(path)}:{lineno}: {module} -> {target} ({why})")

    def src_location(self, abspath):
        """(module, backend) of a path under src/, else (None, None)."""
        rel = os.path.relpath(abspath, self.src)
        if rel.startswith(".."):
            return None, None
        parts = rel.split(os.sep)
        if len(parts) < 2 or parts[0] not in MODULES:
            return None, None
        backend = None
        if parts[0] == TRANSPORT_MODULE and len(parts) >= 3:
            backend = parts[1]
        return parts[0], backend

    def resolve_quoted(self, including, name):
        """Where a quoted include points: (module, backend, private, label).

        module is None when the header is not part of any module (a test
        helper, a system header included with quotes, ...).
        """
        base = os.path.basename(name)
        # The preprocessor looks next to the including file first...
        local = os.path.normpath(os.path.join(os.path.dirname(including),
                                              name))
        if os.path.isfile(local):
            module, backend = self.src_location(local)
            if module is not None:
                return module, backend, is_private_header(name), \
                    self.rel(local)
        # ...then in the include root src/ ("common/loop.h").
        parts = os.path.normpath(name).split(os.sep)
        if parts and parts[0] in MODULES:
            backend = None
            if parts[0] == TRANSPORT_MODULE and len(parts) >= 3:
                backend = parts[1]
            return parts[0], backend, is_private_header(name), \
                "src/" + os.path.normpath(name)
        # Generated control-plane headers live in the build tree of net.
        if base.endswith(".pb-c.h"):
            return "net", None, False, name
        if os.path.isfile(local):
            # A file next to the includer but outside src/<module>/.
            return None, None, is_private_header(name), self.rel(local)
        return None, None, is_private_header(name), name

    # ---------- checks ----------

    def check_module_file(self, path, module, backend):
        """A file of src/<module>/ or tests/unit/<module>/."""
        in_tests = not os.path.abspath(path).startswith(self.src + os.sep)
        self.files += 1
        for lineno, kind, name in iter_includes(path):
            if kind == "<":
                if name.startswith("dango/"):
                    self.check_public_include(path, lineno, module, name)
                continue

            target, tbackend, private, label = self.resolve_quoted(path, name)
            if target is None:
                if private and not in_tests:
                    self.report(path, lineno, module, label,
                                "private header outside any module")
                continue

            self.edges += 1
            if target != module and target not in ALLOWED[module]:
                self.report(path, lineno, module, target)
                continue
            if private and target != module:
                self.report(path, lineno, module, label,
                            "private header of another module")
                continue
            if (private and target == module == TRANSPORT_MODULE and
                    tbackend is not None and backend is not None and
                    tbackend != backend):
                self.report(path, lineno, f"{module}/{backend}", label,
                            "private header of another transport backend")

    def check_public_include(self, path, lineno, module, name):
        header = name[len("dango/"):]
        self.edges += 1
        if module == "common" and header not in COMMON_PUBLIC_OK:
            self.report(path, lineno, module, f"<{name}>")
            return
        if header == UMBRELLA:
            self.report(path, lineno, module, f"<{name}>",
                        "umbrella header is for applications")
            return
        target = PUBLIC_HEADER_MODULE.get(header)
        if target is None or target == module:
            return
        if target not in ALLOWED[module]:
            self.report(path, lineno, module, f"<{name}>")

    def check_public_headers(self):
        inc = os.path.join(self.root, "include", "dango")
        if not os.path.isdir(inc):
            return
        for path in iter_sources(inc):
            if not path.endswith(".h"):
                continue
            self.files += 1
            header = os.path.relpath(path, inc)
            own = PUBLIC_HEADER_MODULE.get(header)
            for lineno, kind, name in iter_includes(path):
                label = f"include/dango/{header}"
                if kind == '"':
                    self.report(path, lineno, label, f'"{name}"',
                                "public headers include only <dango/...> "
                                "and system headers")
                    continue
                if not name.startswith("dango/"):
                    continue  # system header
                self.edges += 1
                dep = PUBLIC_HEADER_MODULE.get(name[len("dango/"):])
                if header == UMBRELLA or own is None or dep is None:
                    continue
                if dep != own and dep not in ALLOWED[own]:
                    self.report(path, lineno, own, f"<{name}>")

    def check_outside(self, top):
        """apps/, bench/, tools/, tests/integration: public API only."""
        for path in iter_sources(top):
            self.files += 1
            for lineno, kind, name in iter_includes(path):
                if kind != '"':
                    continue
                target, _, private, label = self.resolve_quoted(path, name)
                if private and target is not None:
                    self.report(path, lineno, self.rel(top), label,
                                "private header of a module")

    def run(self):
        if os.path.isdir(self.src):
            for entry in sorted(os.listdir(self.src)):
                top = os.path.join(self.src, entry)
                if not os.path.isdir(top):
                    continue
                if entry not in MODULES:
                    self.violations.append(
                        f"src/{entry}: unknown module directory (add it to "
                        f"tools/check_layers.py and docs/design/layers.md)")
                    continue
                for path in iter_sources(top):
                    module, backend = self.src_location(path)
                    self.check_module_file(path, module, backend)

        unit = os.path.join(self.root, "tests", "unit")
        if os.path.isdir(unit):
            for entry in sorted(os.listdir(unit)):
                top = os.path.join(unit, entry)
                if os.path.isdir(top) and entry in MODULES:
                    for path in iter_sources(top):
                        rel = os.path.relpath(path, top).split(os.sep)
                        backend = rel[0] if (entry == TRANSPORT_MODULE and
                                             len(rel) >= 2) else None
                        self.check_module_file(path, entry, backend)

        self.check_public_headers()
        for sub in ("apps", "bench", "tools", "python",
                    os.path.join("tests", "integration")):
            top = os.path.join(self.root, sub)
            if os.path.isdir(top):
                self.check_outside(top)
        return self.violations


def check(root):
    checker = Checker(root)
    violations = checker.run()
    for v in violations:
        print(v)
    if violations:
        print(f"check_layers: {len(violations)} forbidden include edge(s) "
              f"in {checker.files} files", file=sys.stderr)
        return 1
    print(f"check_layers: OK ({checker.files} files, {checker.edges} "
          f"module include edges, no forbidden edge)")
    return 0


# ---------- self-test ----------

SELF_TEST_TREE = {
    # Allowed: downward edges, own private header, public lower headers.
    "src/common/alloc.h": '#include <dango/common.h>\n',
    "src/common/alloc.c": '#include "common/alloc.h"\n'
                          '#include <dango/error.h>\n',
    "src/net/sock.c": '#include "common/alloc.h"\n',
    "src/transport/tcp/tcp_int.h": '#include "net/frame.h"\n',
    "src/transport/tcp/tcp_ep.c": '#include "transport/tcp/tcp_int.h"\n'
                                  '#include "dango_ctrl.pb-c.h"\n'
                                  '#include <dango/transport.h>\n',
    "src/metadata/md_int.h": '#include <dango/metadata.h>\n',
    "src/metadata/md.c": '#include "md_int.h"\n',
    "src/xfer/xfer_int.h": '#include <dango/transport.h>\n'
                           '#include <dango/metadata.h>\n',
    "src/xfer/xfer_engine.c": '#include "xfer/xfer_int.h"\n'
                              '#include "net/sock.h"\n',
    "tests/unit/transport/test_tcp.c": '#include "transport/tcp/tcp_int.h"\n'
                                       '#include "dango_test.h"\n',
    "tests/dango_test.h": '#include <dango/error.h>\n',
    "include/dango/common.h": '#include <stdint.h>\n',
    "include/dango/xfer.h": '#include <dango/config.h>\n',
    "include/dango/dango.h": '#include <dango/xfer.h>\n',
    "apps/tool/main.c": '#include <dango/dango.h>\n',
}

# Each entry: (path, content, expected substring of the violation).
SELF_TEST_BAD = [
    ("src/transport/shm/shm_iface.c", '#include "xfer/xfer_int.h"\n',
     "src/transport/shm/shm_iface.c:1: transport -> xfer (forbidden)"),
    ("src/common/log.c", '\n#include "net/sock.h"\n',
     "src/common/log.c:2: common -> net (forbidden)"),
    ("src/common/loop.c", '#include <dango/xfer.h>\n',
     "src/common/loop.c:1: common -> <dango/xfer.h> (forbidden)"),
    ("src/metadata/md_http.c", '#include <dango/transport.h>\n',
     "src/metadata/md_http.c:1: metadata -> <dango/transport.h> (forbidden)"),
    ("src/metadata/md_mem.c", '#include "dango_ctrl.pb-c.h"\n', None),
    ("src/xfer/xfer_batch.c", '#include "transport/tcp/tcp_int.h"\n',
     "xfer -> src/transport/tcp/tcp_int.h (private header of another "
     "module)"),
    ("src/transport/file/file_iface.c", '#include "transport/tcp/tcp_int.h"\n',
     "transport/file -> src/transport/tcp/tcp_int.h (private header of "
     "another transport backend)"),
    ("src/transport/transport.c", '#include <dango/dango.h>\n',
     "transport -> <dango/dango.h> (umbrella header is for applications)"),
    ("include/dango/transport.h", '#include "xfer/xfer_int.h"\n',
     "include/dango/transport.h:1: include/dango/transport.h -> "
     "\"xfer/xfer_int.h\""),
    ("include/dango/metadata.h", '#include <dango/xfer.h>\n',
     "include/dango/metadata.h:1: metadata -> <dango/xfer.h> (forbidden)"),
    ("tests/unit/net/test_sock.c", '#include "transport/tcp/tcp_int.h"\n',
     "tests/unit/net/test_sock.c:1: net -> transport (forbidden)"),
    ("bench/bench_x.c", '#include "xfer/xfer_int.h"\n',
     "bench/bench_x.c:1: bench -> src/xfer/xfer_int.h (private header of a "
     "module)"),
    ("src/bogus/x.c", '#include "common/alloc.h"\n',
     "src/bogus: unknown module directory"),
]


def write_tree(root, files):
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)


def self_test():
    failures = 0
    with tempfile.TemporaryDirectory(prefix="check_layers.") as tmp:
        good = os.path.join(tmp, "good")
        write_tree(good, SELF_TEST_TREE)
        v = Checker(good).run()
        if v:
            failures += 1
            print("self-test: a clean tree was rejected:")
            for line in v:
                print("  " + line)

        for i, (rel, content, expect) in enumerate(SELF_TEST_BAD):
            bad = os.path.join(tmp, f"bad{i}")
            write_tree(bad, SELF_TEST_TREE)
            write_tree(bad, {rel: content})
            v = Checker(bad).run()
            if expect is None:
                # metadata -> net via a generated header: allowed.
                if v:
                    failures += 1
                    print(f"self-test: {rel}: unexpected {v}")
                continue
            if not any(expect in line for line in v):
                failures += 1
                print(f"self-test: {rel}: expected a violation containing "
                      f"'{expect}', got {v or 'none'}")
            elif len(v) != 1:
                failures += 1
                print(f"self-test: {rel}: expected one violation, got {v}")

    cases = len(SELF_TEST_BAD) + 1
    if failures:
        print(f"check_layers self-test: {failures} of {cases} cases failed")
        return 1
    print(f"check_layers self-test: OK ({cases} cases)")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), os.pardir),
        help="repository root (default: the parent of tools/)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the checker on a generated tree")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    return check(args.root)


if __name__ == "__main__":
    sys.exit(main())
