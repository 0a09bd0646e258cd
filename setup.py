"""Builds the `dango` extension with setuptools (pip install .).

The C sources are python/*.c; they link the library's static archives
(libdango_store.a ... libdango_common.a) whole, as libdango.so does. The
archives come from the CMake build directory DANGO_BUILD_DIR when it has
them, else they are built here with CMake into build-python/cmake (no
download: only the system packages of scripts/deps.sh). setuptools' own
temporary files go to build-python/ as well, never to build/.
"""

import os
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
MODULES = ["store", "xfer", "metadata", "transport", "net", "common"]
PKGS = ["jansson", "libxxhash", "libprotobuf-c", "liburing", "libmicrohttpd",
        "libcurl", "numa", "libcrypto"]


def archives(build):
    return [os.path.join(build, "src", m, f"libdango_{m}.a") for m in MODULES]


class BuildExt(build_ext):
    def run(self):
        build = os.environ.get("DANGO_BUILD_DIR")
        if build is None or not all(map(os.path.exists, archives(build))):
            build = os.path.join(ROOT, "build-python", "cmake")
            subprocess.check_call(
                ["cmake", "-S", ROOT, "-B", build,
                 "-DCMAKE_BUILD_TYPE=Release", "-DDANGO_BUILD_TESTS=OFF",
                 "-DDANGO_BUILD_BENCH=OFF", "-DDANGO_BUILD_PYTHON=OFF"])
            subprocess.check_call(
                ["cmake", "--build", build, "--target", "dango_store",
                 "-j", os.environ.get("DANGO_JOBS", "2")])
        libs = subprocess.check_output(["pkg-config", "--libs"] + PKGS,
                                       text=True).split()
        for ext in self.extensions:
            ext.extra_link_args = (["-Wl,--whole-archive"] + archives(build) +
                                   ["-Wl,--no-whole-archive"] + libs +
                                   ["-lpthread", "-lm"])
        super().run()


setup(
    ext_modules=[Extension(
        "dango",
        sources=[os.path.join("python", f) for f in (
            "dango_module.c", "py_store.c", "py_store_mc.c",
            "py_store_types.c", "py_engine.c")],
        include_dirs=[os.path.join(ROOT, "include"),
                      os.path.join(ROOT, "python")],
        extra_compile_args=["-std=gnu11", "-fvisibility=hidden"])],
    cmdclass={"build_ext": BuildExt},
    packages=[],
    py_modules=[],
    options={"build": {"build_base": os.path.join(ROOT, "build-python")},
             "egg_info": {"egg_base": os.path.join(ROOT, "build-python")}},
)
