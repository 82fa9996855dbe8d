"""Docs tables generated from results files: every measured number in the docs comes from JSON.

A command that measures writes ``docs/results/<name>.json`` (top-level ``command``, ``machine``,
``date``, then the numbers, usually a list of flat rows under ``rows``, each with a ``name``).
A Markdown file holds a table between two markers; this script rewrites what lies between them
from the JSON, or with ``--check`` exits 1 naming every table that disagrees with its file:

    <!-- table: results/learning_speed.json -->
    ... generated, do not edit ...
    <!-- end table -->

    python -m bench.tables            # rewrite the tables in README.md and docs/*.md
    python -m bench.tables --check    # exit 1 if a table and its JSON disagree (CI does this)

The marker may carry a YAML spec after the path (``rows`` and ``columns`` are optional):

    <!-- table: results/foo.json
    rows: rows                      # key path (dots) to a list of row dicts, or a dict of dicts
    names: [trained, untrained]     # keep these rows (by "name"), in this order
    columns:
      - name                        # a key: the header is the key, the cell its value
      - LCT AUC: "{lct_auc:.3f} +- {lct_auc_err:.3f}"   # header: template over the row's keys
    -->

For one object of many numbers (a run's ``metrics``), ``grid`` spells the table out: its
first list is the header, each further list one row of templates over that object:

    <!-- table: results/run.json
    rows: metrics                   # key path to the object; "." is the file's top level
    grid:
      - [metric, trained, untrained]
      - [LCT AUC, "{lct_auc:.3f}", "{lct_init_auc:.3f}"]
    -->

A template's fields are row keys (a key with dots is tried whole first, then as a path);
``{key:.3f}`` formats numbers, a missing or null value prints "-"; a part in square brackets,
``"{auc:.3f}[ +- {err:.3f}]"``, is left out where one of its fields has no value. Under the table a line
names the file's command, machine and date (``footer: false`` leaves it out). Paths in markers
are relative to the Markdown file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"<!-- table:(.*?)-->", re.S)
END = "<!-- end table -->"
FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
OPTIONAL = re.compile(r"\[([^\[\]]*\{[^\[\]]*\}[^\[\]]*)\]")


class TableError(ValueError):
    """A marker, spec or results file that cannot make a table (message names file and field)."""


def docs_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose tables are generated: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


_MISSING = object()


def _find(cur, path: str):
    """``cur[path]``, the rest of the path tried whole at every level before it is split at a
    dot, so a nested key may hold dots (``mimic.auc_at_0.2``); list items by index."""
    if isinstance(cur, dict) and path in cur:
        return cur[path]
    if isinstance(cur, list) and path.isdigit() and int(path) < len(cur):
        return cur[int(path)]
    for i, ch in enumerate(path):
        if ch == ".":
            inner = _find(cur, path[:i])
            if inner is not _MISSING:
                found = _find(inner, path[i + 1:])
                if found is not _MISSING:
                    return found
    return _MISSING


def lookup(data, path: str, where: str):
    """``data[path]``: a key with dots is tried whole first, then as a dotted path."""
    found = _find(data, path)
    if found is _MISSING:
        raise TableError(f"{where}: no key {path!r}")
    return found


def cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_cell(template: str, row: dict, where: str) -> str:
    def present(key: str) -> bool:
        try:
            return lookup(row, key.strip(), where) is not None
        except TableError:
            return False

    def optional(m: re.Match) -> str:  # "[ +- {err}]": only where every field has a value
        part = m.group(1)
        return part if all(present(f.group(1)) for f in FIELD.finditer(part)) else ""

    template = OPTIONAL.sub(optional, template)

    def sub(m: re.Match) -> str:
        key, fmt = m.group(1).strip(), m.group(2)
        try:
            value = lookup(row, key, where)
        except TableError:
            value = None
        try:
            return cell(value, fmt)
        except ValueError as err:
            raise TableError(f"{where}: column {key!r}: format {fmt!r}: {err}") from None
    return FIELD.sub(sub, template)


def section(data: dict, spec: dict, where: str):
    """What ``rows`` names: a key path into the file, or ``.`` for the whole file."""
    path = str(spec.get("rows", "rows"))
    return data if path == "." else lookup(data, path, where)


def rows_of(data: dict, spec: dict, where: str) -> list[dict]:
    rows = section(data, spec, where)
    if isinstance(rows, dict):  # a dict of dicts: the keys become the rows' names
        rows = [{"name": k, **v} for k, v in rows.items() if isinstance(v, dict)]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TableError(f"{where}: {spec.get('rows', 'rows')!r} is not a list of row objects")
    if "names" in spec:
        by_name = {str(r.get("name")): r for r in rows}
        missing = [n for n in spec["names"] if str(n) not in by_name]
        if missing:
            raise TableError(f"{where}: no row named {missing[0]!r} (have {sorted(by_name)})")
        rows = [by_name[str(n)] for n in spec["names"]]
    return rows


def columns_of(spec: dict, rows: list[dict], where: str) -> list[tuple[str, str]]:
    """(header, template) pairs; by default every key of the first row."""
    cols = spec.get("columns")
    if cols is None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        return [(k, "{" + k + "}") for k in keys]
    out = []
    for c in cols:
        if isinstance(c, str):
            out.append((c, "{" + c + "}"))
        elif isinstance(c, dict) and len(c) == 1:
            (header, template), = c.items()
            out.append((str(header), str(template)))
        else:
            raise TableError(f"{where}: a column is a key or {{header: template}}, got {c!r}")
    return out


def grid_lines(data: dict, spec: dict, where: str) -> list[str]:
    """A ``grid`` table: the header, then one row of templates each over the object at ``rows``."""
    obj = section(data, spec, where)
    grid = spec["grid"]
    if not isinstance(obj, dict):
        raise TableError(f"{where}: {spec.get('rows', 'rows')!r} is not an object")
    if (not isinstance(grid, list) or len(grid) < 2 or not all(isinstance(r, list) for r in grid)
            or len({len(r) for r in grid}) != 1):
        raise TableError(f"{where}: grid must be a header and rows, lists of equal length")
    return ["| " + " | ".join(str(h) for h in grid[0]) + " |",
            "| " + " | ".join("---" for _ in grid[0]) + " |",
            *("| " + " | ".join(render_cell(str(t), obj, where) for t in r) + " |"
              for r in grid[1:])]


def render(spec_text: str, md_path: Path) -> str:
    """The Markdown (table + footer) that belongs between one marker pair."""
    first, _, rest = spec_text.strip().partition("\n")
    rel = first.strip()
    where = f"{md_path.name}: table {rel}"
    if not rel:
        raise TableError(f"{md_path.name}: a table marker without a results file")
    try:
        spec = yaml.safe_load(rest) if rest.strip() else {}
    except yaml.YAMLError as err:
        raise TableError(f"{where}: the marker's spec is not YAML ({err})") from None
    if not isinstance(spec, dict):
        raise TableError(f"{where}: the marker's spec must be a mapping")
    path = md_path.parent / rel
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TableError(f"{where}: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise TableError(f"{where}: {path} is not JSON ({err})") from None
    for key in ("command", "machine", "date"):
        if key not in data:
            raise TableError(f"{where}: {path.name} has no top-level {key!r}")
    if "grid" in spec:
        lines = grid_lines(data, spec, where)
    else:
        rows = rows_of(data, spec, where)
        cols = columns_of(spec, rows, where)
        lines = ["| " + " | ".join(h for h, _ in cols) + " |",
                 "| " + " | ".join("---" for _ in cols) + " |"]
        lines += ["| " + " | ".join(render_cell(t, r, where) for _, t in cols) + " |"
                  for r in rows]
    if spec.get("footer", True):
        machine = data["machine"]
        if isinstance(machine, dict):
            machine = ", ".join(f"{v}" for v in machine.values())
        lines += ["", f"<sub>`{data['command']}` ({machine}; {data['date']}; "
                      f"[{path.name}]({rel}))</sub>"]
    return "\n".join(lines)


def update_text(text: str, md_path: Path) -> str:
    """``text`` with every marked table regenerated."""
    out, pos = [], 0
    for m in BEGIN.finditer(text):
        if m.start() < pos:
            continue
        end = text.find(END, m.end())
        if end < 0:
            line = text.count("\n", 0, m.start()) + 1
            raise TableError(f"{md_path.name}:{line}: table marker without '{END}'")
        nested = BEGIN.search(text, m.end(), end)
        if nested:
            line = text.count("\n", 0, nested.start()) + 1
            raise TableError(f"{md_path.name}:{line}: table marker before the previous one's end")
        out += [text[pos:m.end()], "\n", render(m.group(1), md_path), "\n"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="Markdown files (default: README, docs)")
    ap.add_argument("--check", action="store_true", help="exit 1 where a table disagrees")
    args = ap.parse_args(argv)
    stale, errors = [], []
    for md in args.files or docs_files():
        if not md.exists():
            continue
        text = md.read_text()
        try:
            new = update_text(text, md)
        except TableError as err:
            errors.append(str(err))
            continue
        if new != text:
            stale.append(md)
            if not args.check:
                md.write_text(new)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    for md in stale:
        print(f"stale: {md} (a table differs from its results file; run python -m bench.tables)"
              if args.check else f"updated: {md}", file=sys.stderr)
    return 1 if errors or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
