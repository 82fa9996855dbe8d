"""The library does not import the application (docs/internals.md, "Layers").

The library packages (``data``, ``physics``, ``models``, ``losses``, ``eval``) take plain
arguments: they import no config (``clrdist.factory`` turns it into objects), no application
module (CLI, training, tracking, the Ray fan-outs, the watchdog), and neither Ray, MLflow nor
argparse. Below them, the base modules import nothing of clrdist but each other.

The drawing in docs/internals.md ("Layers") is checked against every import of ``clrdist/``.
For the library and the base two checks more, because neither alone sees everything:

- static: every ``import`` statement of every library and base module, in-function ones
  included (an import inside a function runs only when the function does, so no import test
  sees it);
- at run time, in a fresh interpreter: importing every library module loads no clrdist module
  outside the library and the base, through any path, and neither Ray nor MLflow. argparse is
  left out of this check: torch imports it (``torch.distributed`` -> ``unittest``), so it is
  loaded whatever clrdist does; the static check covers it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("data", "physics", "models", "losses", "eval")
# the base: standard library, numpy and torch only (the version, errors, /proc, collectives,
# the collapse diagnostics, the precision policy, the sync counter)
BASE = ("clrdist", "clrdist.errors", "clrdist.procs", "clrdist.distributed",
        "clrdist.diagnostics", "clrdist.precision", "clrdist.syncs")
THIRD_PARTY = ("ray", "mlflow", "argparse")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    """Dotted name -> file of every module under the library packages."""
    return {module_name(p): p for pkg in LIBRARY
            for p in sorted((ROOT / "clrdist" / pkg).rglob("*.py"))}


def base_modules() -> dict[str, Path]:
    out = {}
    for name in BASE:
        path = ROOT.joinpath(*name.split(".")).with_suffix(".py")
        out[name] = path if path.is_file() else ROOT / name / "__init__.py"
    return out


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every import in a file; ``from a.b import c`` gives a.b.c (the module
    a.b.c or a.b's attribute c: :func:`clrdist_module` tells)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def clrdist_module(name: str) -> str | None:
    """The clrdist module an imported name refers to (its longest prefix that is a module
    file or package), None for names outside clrdist."""
    parts = name.split(".")
    if parts[0] != "clrdist":
        return None
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts[:n])
    return name


def in_library(module: str) -> bool:
    return any(module == f"clrdist.{p}" or module.startswith(f"clrdist.{p}.") for p in LIBRARY)


def is_third_party(name: str, which=THIRD_PARTY) -> bool:
    return any(name == t or name.startswith(t + ".") for t in which)


def violations(modules: dict[str, Path], allowed) -> list[str]:
    bad = set()
    for path in modules.values():
        for line, name in imported_names(path):
            target = clrdist_module(name)
            if is_third_party(name) or (target is not None and not allowed(target)):
                bad.add(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return sorted(bad)


def test_the_library_imports_only_the_library_and_the_base_statically():
    modules = library_modules()
    assert len(modules) > 40 and "clrdist.eval.runner" in modules  # the walk found the library
    bad = violations(modules, lambda m: in_library(m) or m in BASE)
    assert not bad, "\n".join(bad)


def test_the_base_imports_only_the_base_statically():
    bad = violations(base_modules(), lambda m: m in BASE)
    assert not bad, "\n".join(bad)


def test_importing_the_library_loads_no_application_module():
    code = ("import importlib, json, sys\n"
            f"for m in {sorted(library_modules())!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout.splitlines()[-1])
    outside = [m for m in loaded if m.startswith("clrdist") and not in_library(m) and m not in BASE]
    assert not outside, outside
    third = [m for m in loaded if is_third_party(m, ("ray", "mlflow"))]  # torch imports argparse
    assert not third, third


def drawing(text: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The layers drawing of docs/internals.md: top-level name under clrdist -> its line (0 at
    the top), and the (importer, imported) pairs a ``─►`` allows on one line. A line of the
    drawing is indented 3 spaces; its names fill the first 56 columns, 3 spaces apart."""
    block = text.split("## Layers", 1)[1].split("```\n")[1]
    lines, side = {}, set()
    rows = [line[:56].strip() for line in block.splitlines() if line.startswith("   ")]
    for i, row in enumerate(rows):
        for group in re.split(r" {3,}", row):
            head, _, targets = group.partition(" ─► ")
            names = [head] + [t for t in targets.split(", ") if t]
            for name in names:
                lines[name.strip().rstrip("/")] = i
            side |= {(head.strip(), t.strip().rstrip("/")) for t in names[1:]}
    return lines, side


def top_level(module: str) -> str:
    """clrdist.data.store.reader -> data; clrdist -> clrdist."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_import_in_clrdist_follows_the_drawing_in_the_docs():
    lines, side = drawing((ROOT / "docs" / "internals.md").read_text())
    assert lines["cli"] == 0 and lines["config"] < lines["eval"] < lines["physics"] < lines["errors"]
    modules = {module_name(p): p for p in sorted((ROOT / "clrdist").rglob("*.py"))}
    missing = sorted({top_level(m) for m in modules} - set(lines))
    assert not missing, f"not in the drawing of docs/internals.md: {missing}"
    bad = set()
    for name, path in modules.items():
        a = top_level(name)
        for line, imported in imported_names(path):
            target = clrdist_module(imported)
            b = target and top_level(target)
            if b and b != a and not (lines[b] > lines[a] or (a, b) in side):
                bad.add(f"{path.relative_to(ROOT)}:{line} imports {imported} ({b} is not "
                        f"below {a} in the drawing)")
    assert not bad, "\n".join(sorted(bad))


def test_the_static_check_sees_in_function_and_from_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\nfrom clrdist import config, errors\n\n"
                   "def f():\n    import ray.util\n    from clrdist.physics import INPUT_FEATURES\n")
    names = {n for _, n in imported_names(src)}
    assert {"os", "clrdist.config", "clrdist.errors", "ray.util",
            "clrdist.physics.INPUT_FEATURES"} <= names
    assert clrdist_module("clrdist.physics.INPUT_FEATURES") == "clrdist.physics"
    assert clrdist_module("clrdist.config.RunConfig") == "clrdist.config"
    assert clrdist_module("os") is None and is_third_party("ray.util")
    assert not in_library("clrdist.config") and in_library("clrdist.data.store.reader")
    lines, side = drawing("## Layers\n```\ntop\n   a ─► b, c/   d" + " " * 40 + "what\n"
                          "   e\n```\n")
    assert lines == {"a": 0, "b": 0, "c": 0, "d": 0, "e": 1} and side == {("a", "b"), ("a", "c")}


# --- in-function imports state why they are there ---------------------------------------------

LAZY = "# lazy:"


def unexplained_function_imports(path: Path) -> list[int]:
    """Lines of the imports inside a function of ``path`` that give no reason: a ``# lazy:``
    comment on the import's own lines or on the line just above it, or just above the run of
    adjacent import lines it belongs to (one reason may cover a block)."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    imports = [n for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
               for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    spans = {n.lineno: n.end_lineno for n in imports}
    starts = {end + 1: start for start, end in spans.items()}  # the import right above

    def explained(first: int) -> bool:
        if any(LAZY in lines[i - 1] for i in range(first, spans[first] + 1)):
            return True
        while True:
            above = lines[first - 2].strip() if first > 1 else ""
            if above.startswith(LAZY):
                return True
            if first not in starts:  # no adjacent import above to share its reason
                return False
            first = starts[first]

    return sorted({n.lineno for n in imports if not explained(n.lineno)})


def test_every_in_function_import_in_clrdist_says_why():
    """An import belongs at the top of its module unless it must not run at import time (an
    optional or heavy dependency, or a cycle): then a ``# lazy: <reason>`` comment says which
    (docs/internals.md, "Layers")."""
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "clrdist").rglob("*.py"))
           for line in unexplained_function_imports(p)]
    assert not bad, "in-function imports without a '# lazy: <reason>' comment:\n" + "\n".join(bad)


def test_the_lazy_check_catches_an_unexplained_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\n\n"
                   "def a():\n    # lazy: torch is heavy\n    import torch\n    import numpy\n\n"
                   "    import scipy\n\n\n"
                   "def b():\n    import json  # lazy: a stated reason on the line\n"
                   "    x = 1\n    import re\n\n\n"
                   "class C:\n    def m(self):\n        from ray import (\n            tune,\n"
                   "        )  # lazy: Ray is heavy\n        from mlflow import log\n")
    # numpy shares torch's reason (adjacent); scipy (after a blank line), re (after code) and
    # mlflow (a reason on an import's own line covers that import only) have none
    assert unexplained_function_imports(src) == [9, 15, 23]
