"""The header every results file carries, and writing one (docs/results/<name>.json).

    write_results("docs/results/learning_speed.json", {"rows": [...]})

adds ``command`` (this process's command line), ``machine`` (CPU model, cores, torch version)
and ``date`` (UTC) in front of the numbers; ``python -m bench.tables`` turns the rows into the
docs' tables.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import torch

    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it: ``python -m pkg.mod ARGS`` for a module run."""
    args = sys.argv[1:] if argv is None else argv
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = (["python", "-m", spec.name] if spec is not None and spec.name
            else ["python", sys.argv[0]])
    return shlex.join(head + list(args))


def header(argv: list[str] | None = None) -> dict:
    return {"command": command_line(argv), "machine": machine(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def write_results(path: str | Path, numbers: dict, argv: list[str] | None = None) -> Path:
    """Write ``header(argv) | numbers`` as indented JSON (atomically: no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**header(argv), **numbers}, indent=2) + "\n")
    tmp.replace(path)
    return path
