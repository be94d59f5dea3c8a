"""`shoal check --model list-append|rw-register`: files in, verdicts, tables, JSON and exit codes
out (the checker itself is tested in test_elle.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from shoal.check import Event, TxnEvent, dump_history, dump_txn_history
from shoal.check.cli import run_txn_check
from shoal.cli import app as cli_app
from test_elle import append, history, r, read_skew, simulate, w, write_skew


def write(tmp_path: Path, events: list[TxnEvent] | str, name: str = "txns.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(events, str):
        path.write_text(events)
    else:
        dump_txn_history(events, path)
    return path


def run(path: Path, model: str = "list-append", **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    code = run_txn_check(path, model, console=Console(file=out, width=160), **kw)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_valid_history(tmp_path: Path) -> None:
    path = write(tmp_path, simulate(200, 4, seed=3))
    code, out = run(path, consistency="strict-serializable")
    assert code == 0 and out.startswith("STRICT-SERIALIZABLE") and "no anomalies" in out
    assert "with realtime order" in out and "200 transactions" in out


def test_anomalies_table(tmp_path: Path) -> None:
    path = write(tmp_path, read_skew())
    code, out = run(path)
    assert code == 1 and out.startswith("NOT SERIALIZABLE")
    assert "not serializable: G-single" in out
    assert "T1 -rw(x)-> T2 -wr(y)-> T1" in out
    assert "T1 (process 0, line 1, ok): r x []; r y [1]" in out
    assert "T2 (process 1, line 2, ok): append x 1; append y 1" in out
    code, out = run(path, consistency="read-committed")
    assert code == 0 and out.startswith("READ-COMMITTED") and "none of which" in out
    assert "G-single" in out and "no" in out  # listed, but not a violation


def test_json_output(tmp_path: Path) -> None:
    code, out = run(write(tmp_path, write_skew()), json_output=True)
    data = json.loads(out)
    assert code == 1 and data["valid"] is False and data["violations"] == ["G2"]
    [anomaly] = data["anomalies"]
    assert anomaly["type"] == "G2" and anomaly["violates"] is True
    assert anomaly["cycle"] == "T1 -rw(x)-> T2 -rw(y)-> T1"
    assert [s["kind"] for s in anomaly["steps"]] == ["rw", "rw"]
    assert anomaly["txns"][0]["ops"] == [["r", "x", []], ["append", "y", 1]]
    assert data["txns"] == {"total": 3, "ok": 3, "info": 0, "fail": 0}
    code, out = run(write(tmp_path, write_skew()), json_output=True,
                    consistency="snapshot-isolation")
    assert code == 0 and json.loads(out)["anomalies"][0]["violates"] is False


def test_rw_register_file(tmp_path: Path) -> None:
    events = history((0, [r("x", None), w("y", 1)]), (1, [r("y", None), w("x", 1)]),
                     concurrent=True)
    path = write(tmp_path, events)
    assert run(path, "rw-register")[0] == 1
    assert run(path, "rw-register", consistency="snapshot-isolation")[0] == 0
    code, out = run(path, "list-append")  # the wrong model is a malformed history
    assert code == 3 and "line 1" in out and "model list-append" in out


def test_many_anomalies_are_summarised(tmp_path: Path) -> None:
    txns: list[tuple] = [(0, [append("x", 1)], "fail")]
    txns += [(p, [r("x", [1])]) for p in range(1, 9)]
    code, out = run(write(tmp_path, history(*txns)))
    assert code == 1 and out.count("which failed") == 5 and "and 3 more" in out
    code, out = run(write(tmp_path, history(*txns)), json_output=True)
    assert len(json.loads(out)["anomalies"]) == 8


def test_malformed_files(tmp_path: Path) -> None:
    good = json.dumps({"process": 0, "type": "invoke", "f": "txn",
                       "value": [["append", "x", 1]], "time": 0})
    cases = {
        good + "\n{oops\n": ("line 2", "bad JSON"),
        "\n\n" + json.dumps({"process": 0, "type": "invoke", "f": "txn",
                             "value": [["append", "x"]], "time": 0}): ("line 3", "3-list"),
        good + "\n" + json.dumps({"process": 0, "type": "ok", "f": "txn",
                                  "value": [["append", "x", 2]], "time": 1}):
            ("line 2", "micro-op 1 completes as append x 2 but the invoke on line 1"),
        good + "\n" + json.dumps({"process": 0, "type": "ok", "f": "txn", "value": [],
                                  "time": 1}): ("line 2", "has 0 micro-op"),
        json.dumps({"process": 0, "type": "invoke", "value": [], "time": 0}):
            ("line 1", "missing field(s) f"),
        json.dumps([1, 2]): ("line 1", "expected a JSON object"),
    }
    for text, (line, message) in cases.items():
        path = write(tmp_path, text)
        code, out = run(path)
        assert code == 3 and "malformed history" in out and line in out and message in out, out
        code, out = run(path, json_output=True)
        error = json.loads(out)
        assert code == 3 and error["error"] == "malformed history"
        assert error["line"] == int(line.split()[1]) and message in error["message"]
    code, out = run(tmp_path / "missing.jsonl")
    assert code == 3 and "cannot read history" in out
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\n")
    assert run(tmp_path / "bin.jsonl")[0] == 3
    code, out = run(write(tmp_path, read_skew()), max_events=3)
    assert code == 3 and "line 4: more than 3 events" in out


def test_shoal_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    path = write(tmp_path, read_skew())
    result = runner.invoke(cli_app, ["check", str(path), "--model", "list-append", "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["violations"] == ["G-single"]
    result = runner.invoke(cli_app, ["check", str(path), "--model", "list-append",
                                     "--consistency", "read-committed"])
    assert result.exit_code == 0 and "READ-COMMITTED" in result.output
    stale = write(tmp_path, history((0, [append("x", 1)]), (0, [r("x", [])]),
                                    (1, [r("x", [1])])), "stale.jsonl")
    args = ["check", str(stale), "--model", "list-append"]
    assert runner.invoke(cli_app, args).exit_code == 0
    assert runner.invoke(cli_app, [*args, "--process-order"]).exit_code == 1
    result = runner.invoke(cli_app, [*args, "--consistency", "strict-serializable"])
    assert result.exit_code == 1 and "G-single-realtime" in result.output
    # Usage errors.
    result = runner.invoke(cli_app, ["check", str(path), "--model", "bank"])
    assert result.exit_code == 2 and "not one of" in result.output
    result = runner.invoke(cli_app, [*args, "--consistency", "linearizable"])
    assert result.exit_code == 2 and "not one of" in result.output
    result = runner.invoke(cli_app, ["check", str(path), "--json"])
    assert result.exit_code == 2 and "only for --model" in result.output
    # The linearizability check is still the default.
    register = tmp_path / "register.jsonl"
    dump_history([Event(0, "invoke", "write", "x", 1, 0), Event(0, "ok", "write", "x", 1, 1)],
                 register)
    result = runner.invoke(cli_app, ["check", str(register)])
    assert result.exit_code == 0 and "LINEARIZABLE" in result.output
    result = runner.invoke(cli_app, ["check", str(register), "--model", "register"])
    assert result.exit_code == 0
