"""The reliability suite (issue 9): faults, reboots, races, hostile input.

Quick mode (default, run by CI inside `pytest tests/hardware`): fewer rounds and
a sample of crash points. Full mode: `SHAREBLOCK_RELIABILITY=full`, run by
`bash scripts/reliability.sh`, which also renders RELIABILITY.md's table.

Every scenario records what it tried and what was lost through the `report`
fixture; the figures land in REPORT (JSON lines) for the table.
"""
import json
import os
import time
from pathlib import Path

import pytest

MODE = os.environ.get("SHAREBLOCK_RELIABILITY", "quick")
REPORT = Path(os.environ.get("SHAREBLOCK_RELIABILITY_REPORT",
                             ".cache/reliability/latest.jsonl"))


def rounds(quick: int, full: int) -> int:
    """How many rounds a scenario runs in this mode."""
    return full if MODE == "full" else quick


@pytest.fixture
def report(request):
    """report(tried=N, survived=N, lost=N, unit="crash points", **details)

    Call once per scenario; a scenario that never calls it records nothing.
    """
    def record(tried: int, survived: int, lost: int, unit: str, **details):
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        entry = {"scenario": request.node.nodeid.split("::", 1)[-1], "mode": MODE,
                 "tried": tried, "survived": survived, "lost": lost, "unit": unit,
                 "when": time.strftime("%Y-%m-%d %H:%M:%S"), **details}
        with open(REPORT, "a") as f:
            f.write(json.dumps(entry) + "\n")
    return record
