"""Build of the C extension specstream._core.

Environment switches (all optional):
  SPECSTREAM_WERROR=1    treat compiler warnings as errors (CI sets this)
  SPECSTREAM_PORTABLE=1  do not tune for the build machine (-march=native off);
                         SIMD kernels are still picked at run time
  SPECSTREAM_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer build
  SPECSTREAM_DEBUG=1     -O0 -g
  SPECSTREAM_CUDA=1|0    force the CUDA backend on (fail without nvcc) or off;
                         default: on when nvcc is found (CUDA_HOME, PATH or
                         /usr/local/cuda)
"""
import glob
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

# ------------------------------------------------------------------- CUDA
# csrc/kernels/cuda/*.cu are compiled with nvcc into objects that join the
# extension's link; SS_WITH_CUDA then drops the stub backend
# (csrc/model/cuda_none.c). Importing the module needs the toolkit's shared
# libraries (found through an rpath), never a GPU.
CUDA_ARCHS = ["80", "90"]


def find_cuda():
    """(toolkit root, nvcc path) or None when the CUDA backend is off."""
    setting = os.environ.get("SPECSTREAM_CUDA", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return None
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(on_path)
    candidates.append("/usr/local/cuda/bin/nvcc")
    for nvcc in candidates:
        if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
            home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
            return home, nvcc
    if setting:
        raise SystemExit("SPECSTREAM_CUDA=1 but no nvcc was found (set CUDA_HOME or put nvcc on PATH)")
    return None


def cuda_libdir(home: str) -> str:
    for sub in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
        if os.path.isfile(os.path.join(home, sub, "libcublas.so")):
            return os.path.join(home, sub)
    raise SystemExit(f"CUDA toolkit at {home} has no libcublas.so (set SPECSTREAM_CUDA=0 for a CPU-only build)")


CUDA = find_cuda()
cuda_sources = sorted(glob.glob("csrc/kernels/cuda/*.cu")) if CUDA else []
# every header a .cu file may include (the C structs it reads): a change rebuilds
cuda_headers = sorted(glob.glob("csrc/**/*.h", recursive=True) + glob.glob("csrc/kernels/cuda/*.cuh")) if CUDA else []
define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if CUDA:
    define_macros.append(("SS_WITH_CUDA", "1"))
    _libdir = cuda_libdir(CUDA[0])
    ldflags += [f"-L{_libdir}", f"-Wl,-rpath,{_libdir}", "-lcublas", "-lcudart", "-lstdc++"]


def nvcc_flags() -> list:
    flags = ["-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-Wall,-Wextra", "-DSS_WITH_CUDA",
             "-Icsrc/include", "-Icsrc"]
    for arch in CUDA_ARCHS:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    # PTX of the newest architecture too, so later GPUs can JIT the kernels
    flags += ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]
    flags += ["-O0", "-g", "-lineinfo"] if flag("SPECSTREAM_DEBUG") else ["-O3", "-lineinfo"]
    if flag("SPECSTREAM_WERROR"):
        flags += ["-Werror", "all-warnings", "-Xcompiler", "-Werror"]
    return flags


class BuildExt(build_ext):
    """Compiles the .cu files with nvcc (in parallel) before the C link."""

    def build_extensions(self):
        if CUDA:
            out_dir = os.path.join(self.build_temp, "cuda")
            os.makedirs(out_dir, exist_ok=True)
            flags = nvcc_flags()
            newest_header = max((os.path.getmtime(h) for h in cuda_headers), default=0.0)

            def compile_one(src):
                obj = os.path.join(out_dir, os.path.basename(src)[:-3] + ".o")
                fresh = os.path.exists(obj) and os.path.getmtime(obj) >= max(os.path.getmtime(src), newest_header)
                if not fresh or self.force:
                    cmd = [CUDA[1], *flags, "-c", src, "-o", obj]
                    print(" ".join(cmd), flush=True)
                    subprocess.run(cmd, check=True)
                return obj

            with ThreadPoolExecutor(max_workers=max(1, min(len(cuda_sources), os.cpu_count() or 1))) as pool:
                objects = list(pool.map(compile_one, cuda_sources))
            for ext in self.extensions:
                ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extensions()


core = Extension(
    "specstream._core",
    sources=sources,
    include_dirs=["csrc/include", "csrc", numpy.get_include()],
    define_macros=define_macros,
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    depends=cuda_sources + cuda_headers,
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
