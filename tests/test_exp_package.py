"""specstream.experiments as a package: the public names, modules that read
on their own with dependencies in one direction, and the ablation marker."""

from __future__ import annotations

import ast

import specstream.experiments as ex

from exp_support import ROOT

PACKAGE_DIR = ROOT / "specstream" / "experiments"

# Every public name of the single-file module this package replaced: scripts,
# notebooks and benchmarks import them from specstream.experiments.
PUBLIC_NAMES = [
    "GenerationSettings", "Grid", "GridError", "Point", "RESULTS_FILE", "ResultStore", "RunSpec", "Runner", "SCHEMA",
    "SECTIONS", "Sweep", "TIMING_COLUMNS", "cmd_merge", "cmd_plot", "cmd_sweep", "code_version", "comparable",
    "grid_fields", "load_results", "merge", "model_identity", "parse_shard", "register_cli", "run_sweep",
    "run_sweep_obj", "shard_file", "submit_slurm",
]

# Lower layers first: a module may import only modules to its left.
LAYERS = ["identity", "settings", "grid", "spec", "store", "runner", "slurm", "cli"]


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in PUBLIC_NAMES if not hasattr(ex, name)]
    assert not missing
    assert set(PUBLIC_NAMES) <= set(ex.__all__)
    assert all(hasattr(ex, name) for name in ex.__all__)
    assert ex.__doc__ and "A *grid* maps dotted field paths" in ex.__doc__


def _sibling_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    return {node.module.split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_modules_depend_in_one_direction() -> None:
    assert sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__") == sorted(LAYERS)
    for i, module in enumerate(LAYERS):
        imported = _sibling_imports(module)
        assert imported <= set(LAYERS[:i]), f"{module} imports {sorted(imported - set(LAYERS[:i]))} (a later layer)"


def test_every_module_has_its_test_file() -> None:
    assert [m for m in LAYERS if not (ROOT / "tests" / f"test_exp_{m}.py").is_file()] == []


def test_ablation_marker_is_registered_and_not_collected_by_default() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert cfg["testpaths"] == ["tests"]
    assert any(m.startswith("ablation:") for m in cfg["markers"])
