"""The layers of ARCHITECTURE.md, enforced: every import in fastgen/ and kernels/ (function-level
imports included) goes to the module's own package or to a layer below its own, and nothing in
the package imports the benchmark harness."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own package and anything on a lower line; the modules
# of the bottom line (the foundation) and of the top line (the command line) may also import each
# other.
LAYERS = [
    ("fastgen._core", "fastgen.program", "fastgen._ext", "fastgen._C"),
    ("fastgen.reference", "fastgen.kernels"),
    ("fastgen.ops",),
    ("fastgen.nn",),
    ("fastgen.sampling",),
    ("fastgen.models", "fastgen.data", "fastgen.latent"),
    ("fastgen.interop",),
    ("fastgen.metrics",),
    ("fastgen.train",),
    ("fastgen.cli", "fastgen.commands", "fastgen.run_config", "fastgen.demo", "fastgen.info", "fastgen.__main__", "fastgen"),
]


def _layer_of(module: str) -> tuple[int, str]:
    """(rank, package) of a dotted module name: the longest prefix listed in LAYERS."""
    best = None
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best[1])):
                best = (rank, package)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")
    return best


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":  # installed as fastgen.kernels
        parts = ["fastgen", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement; ``from fastgen import x`` names x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fastgen":
                found += [(node.lineno, f"fastgen.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(p for d in ("fastgen", "kernels") for p in (ROOT / d).rglob("*.py"))


def violations(sources=SOURCES) -> list[str]:
    wrong = []
    for path in sources:
        module = _module_name(path)
        rank, package = _layer_of(module)
        for line, target in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if target == "bench" or target.startswith("bench."):
                wrong.append(f"{where}: nothing in the package imports the benchmark harness")
                continue
            if target == "fastgen" and module != "fastgen" and rank < len(LAYERS) - 1:
                wrong.append(f"{where}: the top-level package is above every layer")
                continue
            if not target.startswith("fastgen.") or target.startswith(package + ".") or target == package:
                continue
            target_rank, target_package = _layer_of(target)
            shared_line = rank in (0, len(LAYERS) - 1)
            if target_rank > rank or (target_rank == rank and target_package != package and not shared_line):
                wrong.append(f"{where}: {package} (layer {rank}) may not import {target_package} (layer {target_rank})")
    return wrong


def test_no_module_imports_a_layer_above_its_own():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path):
    # The check itself can fail: a reference module that imports the sampling layer is caught.
    bad = ROOT / "fastgen" / "reference" / "_layer_probe.py"
    bad.write_text("from fastgen.sampling import naive_sample\nimport bench.harness\n")
    try:
        found = violations([bad])
    finally:
        bad.unlink()
    assert len(found) == 2 and "may not import fastgen.sampling" in found[0] and "benchmark" in found[1]


@pytest.mark.parametrize("module", ["fastgen.ops.masked_conv2d", "fastgen.kernels.dmol", "fastgen.train.trainer"])
def test_every_module_has_a_layer(module):
    assert _layer_of(module)[0] >= 0
