"""The storage node's boot, as systemd runs it: shareblock-restore.service."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "shareblock-restore.service"


def boot_restore(node_dir: Path) -> subprocess.CompletedProcess:
    """The unit's ExecStart, as systemd runs it: its binary mapped to this venv's,
    its --state-dir to the test's node folder."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.split("=", 1)[1])
    argv[0] = os.path.join(os.path.dirname(sys.executable), os.path.basename(argv[0]))
    argv[argv.index("--state-dir") + 1] = str(node_dir)
    return subprocess.run(argv, capture_output=True, text=True, timeout=1800)


# What the lab boots with (lab/guest-init.sh): after a test's reboot, every one of
# them back, not only what the restore's documents needed
LAB_MODULES = ["target_core_mod", "target_core_iblock", "target_core_file", "iscsi_target_mod",
               "nvmet", "nvmet-tcp", "nvme-tcp", "dm_flakey", "dm_thin_pool"]


def load_lab_modules() -> None:
    subprocess.run(["modprobe", "-a", *LAB_MODULES], check=True, capture_output=True)
