"""Unit suite settings: hypothesis profiles, and the inputs tally for the reliability report.

Only a reliability run (SHAREBLOCK_RELIABILITY=quick|full) writes the report, so
the ordinary unit run leaves no files behind.
"""
import json
import os
import time
from pathlib import Path

import pytest

from tests.unit import hostile  # noqa: F401  (registers and loads the hypothesis profile)


@pytest.fixture(autouse=True)
def node_dir(tmp_path, monkeypatch):
    """A node's desired state of the test's own: nothing lands in /var/lib/shareblock."""
    monkeypatch.setenv("SHAREBLOCK_NODE_DIR", str(tmp_path / "node-default"))


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("SHAREBLOCK_RELIABILITY") or not hostile.TALLY:
        return
    report = Path(os.environ.get("SHAREBLOCK_RELIABILITY_REPORT",
                                 ".cache/reliability/latest.jsonl"))
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "a") as f:
        for scenario, (tried, lost) in sorted(hostile.TALLY.items()):
            if not tried:
                continue  # not selected in this run
            f.write(json.dumps({
                "scenario": f"hostile input: {scenario}", "mode": hostile.MODE,
                "tried": tried, "survived": tried - lost, "lost": lost, "unit": "inputs",
                "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
