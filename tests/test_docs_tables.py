"""bench/tables.py: docs tables generated from docs/results/*.json, and checked against them."""

import json

import pytest

from bench import tables

RESULT = {"command": "python -m bench.x --out docs/results/x.json", "machine": "2-core EPYC",
          "date": "2026-12-06",
          "rows": [{"name": "trained", "lct_auc": 0.9612, "err": 0.0031, "n": 4000},
                   {"name": "untrained", "lct_auc": 0.9474, "err": 0.0037, "n": 4000}],
          "nested": {"ours": {"auc": 0.95, "lct_inv_eps_b_at_0.5": 40.2},
                     "reference": {"auc": 0.91, "lct_inv_eps_b_at_0.5": None}}}


def docs(tmp_path, body: str) -> tuple:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text(json.dumps(RESULT))
    md = tmp_path / "doc.md"
    md.write_text(f"Intro.\n\n{body}\n<!-- end table -->\n\nOutro.\n")
    return md, tmp_path / "results" / "x.json"


def test_the_repos_docs_agree_with_their_results_files():
    """The CI check: every table in README.md and docs/*.md equals what its JSON generates."""
    assert tables.main(["--check"]) == 0


def test_a_table_is_generated_then_a_changed_number_fails_the_check(tmp_path):
    spec = ("<!-- table: results/x.json\ncolumns:\n  - name\n"
            "  - LCT AUC: \"{lct_auc:.3f} +- {err:.3f}\"\n  - n\n-->")
    md, js = docs(tmp_path, spec)
    assert tables.main([str(md), "--check"]) == 1  # empty table: stale
    assert tables.main([str(md)]) == 0
    text = md.read_text()
    assert "| name | LCT AUC | n |" in text
    assert "| trained | 0.961 +- 0.003 | 4000 |" in text
    assert "| untrained | 0.947 +- 0.004 | 4000 |" in text
    assert "`python -m bench.x --out docs/results/x.json`" in text  # the command beside it
    assert text.startswith("Intro.") and text.endswith("Outro.\n")
    assert tables.main([str(md), "--check"]) == 0
    assert tables.main([str(md)]) == 0 and md.read_text() == text  # idempotent

    # a hand-edited number in the doc fails the check
    md.write_text(text.replace("0.961", "0.971"))
    assert tables.main([str(md), "--check"]) == 1
    md.write_text(text)
    # ... and so does a new measurement that the doc has not picked up
    js.write_text(json.dumps({**RESULT, "rows": [{**RESULT["rows"][0], "lct_auc": 0.9551},
                                                 RESULT["rows"][1]]}))
    assert tables.main([str(md), "--check"]) == 1


def test_a_dict_of_rows_row_selection_and_keys_with_dots(tmp_path):
    spec = ("<!-- table: results/x.json\nrows: nested\nnames: [reference, ours]\n"
            "footer: false\ncolumns:\n  - name\n  - auc\n"
            "  - 1/eps_B: \"{lct_inv_eps_b_at_0.5:.1f}\"\n"
            "  - opt: \"{auc}[ ({lct_inv_eps_b_at_0.5:.0f})]\"\n-->")
    md, _ = docs(tmp_path, spec)
    tables.main([str(md)])
    text = md.read_text()
    assert "| reference | 0.91 | - | 0.91 |\n| ours | 0.95 | 40.2 | 0.95 (40) |" in text
    assert "<sub>" not in text


def test_default_columns_are_the_rows_keys(tmp_path):
    md, _ = docs(tmp_path, "<!-- table: results/x.json -->")
    tables.main([str(md)])
    assert "| name | lct_auc | err | n |\n| --- | --- | --- | --- |\n| trained | 0.9612 |" in md.read_text()


@pytest.mark.parametrize("body, message", [
    ("<!-- table: results/nope.json -->", "nope.json does not exist"),
    ("<!-- table: results/x.json\nrows: missing\n-->", "no key 'missing'"),
    ("<!-- table: results/x.json\nnames: [supervised]\n-->", "no row named 'supervised'"),
    ("<!-- table: results/x.json\ncolumns: [[a, b]]\n-->", "a column is a key or"),
])
def test_bad_markers_and_files_are_named(tmp_path, capsys, body, message):
    md, _ = docs(tmp_path, body)
    before = md.read_text()
    assert tables.main([str(md)]) == 1
    assert message in capsys.readouterr().err
    assert md.read_text() == before  # nothing half-written


def test_a_results_file_without_its_command_is_refused(tmp_path, capsys):
    md, js = docs(tmp_path, "<!-- table: results/x.json -->")
    js.write_text(json.dumps({k: v for k, v in RESULT.items() if k != "command"}))
    assert tables.main([str(md), "--check"]) == 1
    assert "no top-level 'command'" in capsys.readouterr().err


def test_an_unterminated_marker_is_an_error(tmp_path, capsys):
    md = tmp_path / "doc.md"
    md.write_text("<!-- table: results/x.json -->\n| a |\n")
    assert tables.main([str(md), "--check"]) == 1
    assert "without '<!-- end table -->'" in capsys.readouterr().err


def test_a_json_printing_command_becomes_a_results_file(tmp_path):
    import sys

    from bench import results

    out = tmp_path / "r.json"
    code = "print('banner'); import json; print(json.dumps({'rows': [{'name': 'a', 'auc': 0.9}]}))"
    assert results.main([str(out), "--", sys.executable, "-c", code]) == 0
    data = json.loads(out.read_text())
    assert data["rows"] == [{"name": "a", "auc": 0.9}]
    assert data["command"].endswith("-c " + results.shlex.quote(code)) and data["machine"]
    assert {"load_avg_1m_start", "load_avg_1m_end"} <= data.keys()  # how loaded the machine was
    assert results.main([str(tmp_path / "no.json"), "--", sys.executable, "-c", "print(1)"]) == 2
    assert results.main([str(tmp_path / "no.json"), "--", sys.executable, "-c", "exit(3)"]) == 3
    assert not (tmp_path / "no.json").exists()


def test_a_command_that_writes_a_json_file_becomes_a_results_file(tmp_path):
    import sys

    from bench import results

    out, summary = tmp_path / "r.json", tmp_path / "summary.json"
    code = f"import json; open({str(summary)!r}, 'w').write(json.dumps({{'rows': [1]}}))"
    assert results.main([str(out), "--json-file", str(summary), "--", sys.executable, "-c",
                         code]) == 0
    assert json.loads(out.read_text())["rows"] == [1]
    # a file this run did not write (left over from an earlier one) is refused
    assert results.main([str(tmp_path / "no.json"), "--json-file", str(summary), "--",
                         sys.executable, "-c", "pass"]) == 2
    assert not (tmp_path / "no.json").exists()


def test_a_grid_spells_out_a_table_over_one_object(tmp_path):
    from bench import tables

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text(json.dumps(
        {"command": "c", "machine": "m", "date": "d",
         "metrics": {"lct_auc": 0.8214, "lct_init_auc": 0.808, "z_auc": None}}))
    md = tmp_path / "doc.md"
    md.write_text("<!-- table: results/run.json\nrows: metrics\nfooter: false\ngrid:\n"
                  "  - [metric, trained, untrained]\n"
                  "  - [LCT AUC, '{lct_auc:.3f}', '{lct_init_auc:.3f}']\n"
                  "  - ['|z| AUC', '{z_auc:.3f}', '{nope:.3f}']\n"
                  "-->\n<!-- end table -->\n")
    assert tables.main([str(md)]) == 0
    assert ("| metric | trained | untrained |\n| --- | --- | --- |\n"
            "| LCT AUC | 0.821 | 0.808 |\n| |z| AUC | - | - |") in md.read_text()
    md.write_text("<!-- table: results/run.json\nrows: metrics\ngrid: [[a, b], [c]]\n-->\n"
                  "<!-- end table -->\n")
    assert tables.main([str(md), "--check"]) == 1


def test_a_grid_over_the_files_top_level(tmp_path):
    """``rows: .`` is the results file itself: a bench that prints one flat object of numbers."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.json").write_text(json.dumps(
        {"command": "c", "machine": "m", "date": "d", "rate": 1234567, "cpu": {"rate": 2e6}}))
    md = tmp_path / "doc.md"
    md.write_text("<!-- table: results/bench.json\nrows: .\nfooter: false\ngrid:\n"
                  "  - [quantity, wall, per CPU-s]\n"
                  "  - [jets/s, '{rate:,.0f}', '{cpu.rate:,.0f}']\n"
                  "-->\n<!-- end table -->\n")
    assert tables.main([str(md)]) == 0
    assert "| jets/s | 1,234,567 | 2,000,000 |" in md.read_text()


def test_nested_keys_with_dots_and_list_items(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.json").write_text(json.dumps(
        {"command": "c", "machine": "m", "date": "d",
         "mimic": {"hln_inv_eps_b_at_0.2": 19.0}, "efps": {"hln": ["a", "b"], "pnn": []}}))
    md = tmp_path / "doc.md"
    md.write_text("<!-- table: results/bench.json\nrows: .\nfooter: false\ngrid:\n"
                  "  - [x, y, z]\n"
                  "  - ['{mimic.hln_inv_eps_b_at_0.2:.1f}', '{efps.hln.0}[, {efps.hln.1}]',"
                  " 'none[{efps.pnn.0}]']\n"
                  "-->\n<!-- end table -->\n")
    assert tables.main([str(md)]) == 0
    assert "| 19.0 | a, b | none |" in md.read_text()
