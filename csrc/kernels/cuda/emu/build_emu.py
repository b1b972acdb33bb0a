"""Builds specstream with its CUDA backend running on a CPU SIMT emulator, and
optionally runs the cuda-marked tests against it.

    python csrc/kernels/cuda/emu/build_emu.py [--out build/cuda_emu] [--test [PYTEST ARGS...]]

The backend's .cu files are compiled as C++ by g++ after one rewrite: each
kernel launch `k<<<grid, block, smem, stream>>>(args);` becomes
`ss_emu::launch(dim3(grid), dim3(block), stream, [=]() { k(args); });`.
simt_emu.h (force-included) runs every CUDA thread as a fiber with warp and
block barriers; emu_runtime.cpp emulates the CUDA runtime and cuBLAS GemmEx
on host memory (stream capture and graphs included). The C core is compiled
as usual with SS_WITH_CUDA, and the whole links into OUT/specstream/_core*.so
next to a copy of the Python package; nothing needs a GPU or libcudart.

What this checks: the kernels' index arithmetic, reductions, barriers
(fibers run in a random order between barriers, so unordered shared-memory
reads can show), the host driver and the graph capture, end to end against
the CPU backend. What it does not: timing, the GPU memory model, PTX, real
cuBLAS, or anything about performance.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
EMU = Path(__file__).resolve().parent
CUDA_INCLUDE = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "include")


def _match(text: str, i: int, open_c: str, close_c: str) -> int:
    """Index just past the bracket matching text[i] == open_c."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_c:
            depth += 1
        elif text[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced {open_c} at {i}")


def _split_top(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for j, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:j].strip())
            start = j + 1
    parts.append(s[start:].strip())
    return parts


def rewrite_launches(src: str) -> str:
    """k<<<g, b, smem, stream>>>(args) -> ss_emu::launch(dim3(g), dim3(b), stream, [=]() { k(args); })"""
    out, pos = [], 0
    while True:
        i = src.find("<<<", pos)
        if i < 0:
            out.append(src[pos:])
            return "".join(out)
        # the kernel expression: an identifier, maybe with template arguments
        j = i
        if src[j - 1] == ">":
            depth = 0
            while True:
                j -= 1
                if src[j] == ">":
                    depth += 1
                elif src[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
        m = re.search(r"[A-Za-z_][\w:]*$", src[:j])
        start = m.start()
        kernel = src[start:i]
        k = src.index(">>>", i)
        cfg = _split_top(src[i + 3:k])
        if len(cfg) != 4:
            raise ValueError(f"launch of {kernel} needs grid, block, smem, stream: {cfg}")
        a0 = src.index("(", k)
        a1 = _match(src, a0, "(", ")")
        args = src[a0 + 1:a1 - 1]
        out.append(src[pos:start])
        out.append(f"ss_emu::launch(dim3({cfg[0]}), dim3({cfg[1]}), {cfg[3]}, [=]() {{ {kernel}({args}); }})")
        pos = a1


def run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or res.stderr.strip():
        sys.stderr.write(" ".join(cmd) + "\n" + res.stdout + res.stderr)
    if res.returncode != 0:
        raise SystemExit(f"build_emu: command failed ({res.returncode})")


def build(out: Path) -> Path:
    import numpy

    obj_dir, gen_dir, pkg = out / "obj", out / "gen", out / "pkg"
    for d in (obj_dir, gen_dir):
        d.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", f"-I{numpy.get_include()}",
                f"-I{sysconfig.get_paths()['include']}"]
    common = ["-O1", "-g", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra", "-DSS_WITH_CUDA",
              "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION", *includes]
    jobs = []
    for cu in sorted(glob.glob(str(ROOT / "csrc" / "kernels" / "cuda" / "*.cu"))):
        gen = gen_dir / (Path(cu).stem + ".cpp")
        gen.write_text(f'#line 1 "{cu}"\n' + rewrite_launches(Path(cu).read_text()))
        jobs.append(["g++", "-std=c++17", *common, "-DSS_SIMT_EMU", f"-I{CUDA_INCLUDE}", "-include",
                     str(EMU / "simt_emu.h"), "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-c", str(gen), "-o",
                     str(obj_dir / (Path(cu).stem + ".o"))])
    jobs.append(["g++", "-std=c++17", *common, "-DSS_SIMT_EMU", f"-I{CUDA_INCLUDE}", "-c",
                 str(EMU / "emu_runtime.cpp"), "-o", str(obj_dir / "emu_runtime.o")])
    c_sources = [p for p in sorted(glob.glob(str(ROOT / "csrc" / "**" / "*.c"), recursive=True))
                 if "/cuda/" not in p.replace(os.sep, "/")]
    objects = [str(obj_dir / (Path(cu).stem + ".o")) for cu in glob.glob(str(ROOT / "csrc/kernels/cuda/*.cu"))]
    objects.append(str(obj_dir / "emu_runtime.o"))
    for c in c_sources:
        rel = Path(c).relative_to(ROOT).with_suffix(".o")
        obj = obj_dir / str(rel).replace(os.sep, "_")
        jobs.append(["gcc", "-std=c11", "-fopenmp", "-fno-strict-aliasing", *common, "-c", c, "-o", str(obj)])
        objects.append(str(obj))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(run, jobs))
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(ROOT / "specstream", pkg / "specstream",
                    ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    target = pkg / "specstream" / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    run(["g++", "-shared", "-fopenmp", *objects, "-o", str(target), "-lm"])
    return pkg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "cuda_emu"))
    ap.add_argument("--test", nargs=argparse.REMAINDER, help="run pytest on tests/test_cuda.py (extra args follow)")
    args = ap.parse_args()
    pkg = build(Path(args.out))
    print(f"built {pkg}")
    if args.test is not None:
        env = dict(os.environ, PYTHONPATH=str(pkg))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_cuda.py"),
               *args.test]
        raise SystemExit(subprocess.run(cmd, cwd=pkg, env=env).returncode)


if __name__ == "__main__":
    main()
