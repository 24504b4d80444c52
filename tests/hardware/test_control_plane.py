"""The seed's commands end to end, through the CLI, on both transports."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from shareblock.cli import main as cli
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host

MB = 1 << 20


@pytest.fixture
def shareblock(tmp_path):
    conf = lab_config.write(tmp_path)

    def run(*args, expect=0):
        """The real CLI (in-process: a Python start costs seconds under emulation)."""
        rc, out, err = cli.run_captured(["--config", str(conf), "--json", *args])
        assert rc == expect, (args, out, err)
        return json.loads(out) if expect == 0 and out.strip() else err
    return run


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_seed_scenario(shareblock, protocol, unique):
    backend_proto = "iSCSI" if protocol == "iscsi" else "NVMe-oF"
    vtype, plain = f"multiattach-{protocol}", f"plain-{protocol}"
    shareblock("type-create", vtype)
    shareblock("type-key", vtype, "set", "multiattach=<is> True",
               f"storage_protocol={backend_proto}")
    shareblock("type-create", plain)
    shareblock("type-key", plain, "set", f"storage_protocol={backend_proto}")
    vol = shareblock("create", "--volume-type", vtype, "--name", f"shared-{unique}", "1")
    assert vol["status"] == "available" and vol["multiattach"] is True
    a, b = Host(protocol, f"cp-a-{unique}"), Host(protocol, f"cp-b-{unique}")
    key = "initiator" if protocol == "iscsi" else "nqn"
    try:
        att_a = shareblock("--show-secrets", "attachment-create", vol["id"], "--connect", "true",
                           "--connector", json.dumps({key: a.id, "host": "host-a"}))
        att_b = shareblock("--show-secrets", "attachment-create", vol["id"], "--connect", "true",
                           "--connector", json.dumps({key: b.id, "host": "host-b"}))
        for att in (att_a, att_b):
            assert att["connection_info"]["data"]["access_mode"] == "rw"
            shareblock("attachment-complete", att["id"])
        shown = shareblock("show", vol["id"])
        assert shown["status"] == "in-use" and len(shown["attachments"]) == 2
        a.attach(att_a["connection_info"])
        b.attach(att_b["connection_info"])
        data = os.urandom(MB)
        a.write(data)
        assert b.read(MB) == data, "both hosts see the same data"

        err = shareblock("retype", vol["id"], plain, expect=4)
        assert "only allowed on available volumes" in err
        assert shareblock("show", vol["id"])["volume_type"] == vtype

        a.disconnect()
        shareblock("attachment-delete", att_a["id"])
        assert b.read(MB) == data, "the other host keeps working"
        data2 = os.urandom(MB)
        b.write(data2, offset_mb=2)
        assert b.read(MB, offset_mb=2) == data2
        listed = shareblock("attachment-list", "--volume-id", vol["id"])
        assert [x["id"] for x in listed] == [att_b["id"]]
        b.disconnect()
        shareblock("attachment-delete", att_b["id"])
        assert shareblock("show", vol["id"])["status"] == "available"
        assert shareblock("retype", vol["id"], plain)["multiattach"] is False
        assert shareblock("reconcile")["revoked"] == []
    finally:
        a.cleanup()
        b.cleanup()
    shareblock("delete", vol["id"])


def test_same_cli_over_ssh(shareblock, sshd, tmp_path, unique):
    """`shareblock --control ssh://...` runs the command on the node, as the SSH user."""
    conf = tmp_path / "shareblock.conf"
    env = dict(os.environ, SHAREBLOCK_REMOTE_COMMAND=shlex.join(
        [os.path.join(os.path.dirname(sys.executable), "shareblock"), "--config", str(conf)]))

    def remote(*args, expect=0):
        res = subprocess.run([sys.executable, "-m", "shareblock.cli.main", "--control",
                              sshd["url"], "--known-hosts", sshd["known_hosts"], "--ssh-key",
                              sshd["key"], "--json", *args], capture_output=True, text=True,
                             env=env)
        assert res.returncode == expect, (args, res.stdout, res.stderr)
        return json.loads(res.stdout) if expect == 0 else res.stderr

    created = remote("type-create", f"over-ssh-{unique}")
    assert shareblock("type-list")[-1]["id"] == created["id"], "same state as local"
    assert "not found" in remote("show", "no-such-volume", expect=3)
    # unknown and changed host keys: reliability/test_secrets.py, in process
