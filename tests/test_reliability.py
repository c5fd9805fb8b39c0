"""Concurrent writers and killed processes, with real processes: nothing duplicated, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_mastctl
from test_kb import _big_jsonl


@pytest.mark.slow
@pytest.mark.parametrize("store", ["lancedb", "chroma"])
def test_two_concurrent_ingests_leave_no_duplicate_ids(tmp_path, store):
    pytest.importorskip("lancedb" if store == "lancedb" else "chromadb")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    n = _big_jsonl(a, 12)  # 468 records
    lines = a.read_text().splitlines()
    # b repeats the second half of a's ids and adds as many new ones
    half = lines[len(lines) // 2:]
    extra = [json.dumps({**json.loads(line), "id": json.loads(line)["id"] + "-b"}) for line in half]
    b.write_text("\n".join(half + extra) + "\n")
    distinct = n + len(extra)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MASTCTL_")},
           "MASTCTL_KB__URI": str(tmp_path / "kb"), "MASTCTL_KB__STORE": store}
    exe = Path(sys.executable).with_name("mastctl")
    procs = [subprocess.Popen([str(exe), "--json", "kb", "ingest", str(src)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for src in (a, b)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    added = sum(json.loads(out)["added"] for out, _ in results)
    assert added == distinct  # every id added exactly once, by one writer or the other
    stats = run_mastctl("--json", "kb", "stats", env={"MASTCTL_KB__URI": str(tmp_path / "kb"), "MASTCTL_KB__STORE": store})
    assert stats.exit_code == 0 and stats.json()["records"] == distinct
    exported = tmp_path / "all.jsonl"
    r = run_mastctl("kb", "export", str(exported), env={"MASTCTL_KB__URI": str(tmp_path / "kb"), "MASTCTL_KB__STORE": store})
    ids = [json.loads(line)["id"] for line in exported.read_text().splitlines()]
    assert r.exit_code == 0 and len(ids) == len(set(ids)) == distinct
