"""Hardware tests run against the real kernel: never skipped, never faked.

Run them through the lab: `shareblock-lab run -- python -m pytest tests/hardware`.
"""
import subprocess
import uuid
from pathlib import Path

import pytest

CONFIGFS = Path("/sys/kernel/config")


def pytest_sessionstart(session):
    missing = [p for p in (CONFIGFS / "target", CONFIGFS / "nvmet") if not p.is_dir()]
    if missing:
        pytest.exit(f"this kernel lacks {', '.join(map(str, missing))}: run the hardware "
                    "suite through `shareblock-lab run -- python -m pytest tests/hardware`",
                    returncode=3)


@pytest.fixture
def loop_device(tmp_path):
    """Factory: a fresh loop block device over a sparse file; detached afterwards."""
    made = []

    def make(size_mb: int = 64) -> str:
        backing = tmp_path / f"disk{len(made)}.img"
        with open(backing, "wb") as f:
            f.truncate(size_mb << 20)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def unique():
    """A short unique token so objects of one test never meet another's."""
    return uuid.uuid4().hex[:8]

