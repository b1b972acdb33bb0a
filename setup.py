"""Build of the C extension specstream._core.

Environment switches (all optional):
  SPECSTREAM_WERROR=1    treat compiler warnings as errors (CI sets this)
  SPECSTREAM_PORTABLE=1  do not tune for the build machine (-march=native off);
                         SIMD kernels are still picked at run time
  SPECSTREAM_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer build
  SPECSTREAM_DEBUG=1     -O0 -g
"""
import glob
import os

import numpy
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "no")


sources = sorted(
    p for p in glob.glob("csrc/**/*.c", recursive=True) if "/cuda/" not in p.replace(os.sep, "/")
)

cflags = ["-std=c11", "-fopenmp", "-Wall", "-Wextra", "-fno-strict-aliasing"]
ldflags = ["-fopenmp", "-lm"]
if flag("SPECSTREAM_DEBUG"):
    cflags += ["-O0", "-g"]
else:
    cflags += ["-O3", "-g1"]
if not flag("SPECSTREAM_PORTABLE"):
    cflags += ["-march=native"]
if flag("SPECSTREAM_WERROR"):
    cflags += ["-Werror"]
if flag("SPECSTREAM_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    cflags += san
    ldflags += san

core = Extension(
    "specstream._core",
    sources=sources,
    include_dirs=["csrc/include", "csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)

setup(ext_modules=[core])
