"""The header every results file carries, and writing one (docs/results/<name>.json).

    write_results("docs/results/learning_speed.json", {"rows": [...]})

adds ``command`` (this process's command line), ``machine`` (CPU model, cores, torch version)
and ``date`` (UTC) in front of the numbers; ``python -m bench.tables`` turns the rows into the
docs' tables. A command that prints one JSON object (the other benches, ``clrdist ... --json``)
becomes a results file through

    python -m bench.results docs/results/NAME.json -- python bench/nplm.py --toys 2

which runs it (no shell), takes the last JSON object it printed and writes it with the header
(``command`` is the wrapped command). A command that writes its numbers to a file instead (the
demo's ``summary.json``) names it with ``--json-file``:

    python -m bench.results docs/results/demo.json --json-file demo_out/summary.json -- \
        .venv/bin/clrdist demo

(the file must be written by this run: one older than the command's start is refused).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
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


def load_avg_1m() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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


def last_json_object(text: str) -> dict:
    """The last top-level JSON object in ``text`` (a command's stdout, among other lines)."""
    decoder = json.JSONDecoder()
    found = None
    for i, ch in enumerate(text):
        if ch == "{" and (i == 0 or text[i - 1] == "\n"):
            try:
                obj, _ = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                found = obj
    if found is None:
        raise ValueError("the command printed no JSON object at the start of a line")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run a command that prints one JSON object and "
                                             "write it as a results file")
    ap.add_argument("out", help="results file, e.g. docs/results/nplm.json")
    ap.add_argument("--json-file", type=Path, default=None,
                    help="take the numbers from this JSON file, written by the command, instead "
                         "of its standard output")
    ap.usage = "%(prog)s [-h] [--json-file FILE] out -- COMMAND ARGS..."
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # by hand: the command has options too
    args, cmd = ap.parse_args(argv[:cut]), argv[cut + 1:]
    if not cmd:
        ap.error("no command after --")
    started = datetime.datetime.now().timestamp()
    load_start = load_avg_1m()
    run = subprocess.run(cmd, stdout=None if args.json_file else subprocess.PIPE, text=True)
    if run.returncode != 0:
        print(f"bench.results: {shlex.join(cmd)} exited {run.returncode}; nothing written",
              file=sys.stderr)
        return run.returncode
    try:
        if args.json_file is None:
            numbers = last_json_object(run.stdout)
        elif not args.json_file.is_file() or args.json_file.stat().st_mtime < started:
            raise ValueError(f"{args.json_file}: not written by this run")
        else:
            numbers = json.loads(args.json_file.read_text())
    except ValueError as err:
        print(f"bench.results: {shlex.join(cmd)}: {err}; nothing written", file=sys.stderr)
        return 2
    head = {**header(), "command": shlex.join(cmd), "load_avg_1m_start": load_start,
            "load_avg_1m_end": load_avg_1m()}
    write_results(args.out, {**numbers, **head})
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
