"""Hardware tests run against the real kernel: never skipped, never faked.

Run them through the lab: `shareblock-lab run -- python -m pytest tests/hardware`.
"""
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

CONFIGFS = Path("/sys/kernel/config")
SSH_PORT = 2222


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



@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1:2222 in the lab: a storage node reached over loopback."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    config = d / "sshd_config"
    config.write_text(f"""Port {SSH_PORT}
ListenAddress 127.0.0.1
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
StrictModes no
PidFile {d / 'sshd.pid'}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stderr=open(d / "sshd.log", "w"))
    host_key = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{SSH_PORT} {host_key[0]} {host_key[1]}\n")
    (d / "empty_known_hosts").write_text("")
    time.sleep(1)
    yield {"url": f"ssh://root@127.0.0.1:{SSH_PORT}", "known_hosts": str(d / "known_hosts"),
           "empty": str(d / "empty_known_hosts"), "key": str(d / "client")}
    proc.terminate()
    proc.wait()
