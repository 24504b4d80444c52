"""Secrets never leak (issue 9): not in logs, not in output unless asked, files private.

One full scenario per transport through the real CLI: a multiattach volume, this
host attached with `shareblock connect` (os-brick) and a second identity through
`attachment-create --connector JSON`, `--json` and table output without
`--show-secrets`, `--debug`, a refused request, the guard, events, reconcile,
detach and delete. Every log record (root logger at DEBUG) and everything printed
is searched for every CHAP password and DH-HMAC-CHAP key in the node's documents.
Then the SSH paths: unknown or changed host keys are refused on all three.
"""
import io
import json
import logging
import stat
import subprocess
from pathlib import Path

import pytest

from shareblock.cli import main as cli
from shareblock.cli import output
from shareblock.cli import remote as cli_remote
from shareblock.host import attach
from shareblock.host.control import SshControl
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host
from shareblock.targets.base import Portal, TargetError
from shareblock.targets.factory import open_target
from tests.hardware.reliability.conftest import MODE

SECRET_FIELDS = ("secret", "mutual_secret", "dhchap_key", "dhchap_ctrl_key")
# the backends' keys, the node's desired documents and their locks, the database
PRIVATE_FILES = ("*.key", "node/*/*.json", "node/*/.lock-*", "shareblock.sqlite*")


def node_secrets(state: Path) -> set[str]:
    """Every secret the storage node's desired documents hold now."""
    found = set()
    for path in state.glob("node/*/*.json"):
        for host in json.loads(path.read_text())["hosts"]:
            creds = host.get("credentials", {})
            found |= {creds[f] for f in SECRET_FIELDS if creds.get(f)}
    return found


def forms(secret: str) -> set[str]:
    """A secret as it could appear: whole, and a DH-HMAC-CHAP key's base64 alone."""
    found = {secret}
    if secret.startswith("DHHC-1:"):
        found.add(secret.split(":")[2])
    return found


@pytest.fixture
def debug_logs():
    """Everything any logger says, at DEBUG (the CLI's basicConfig then adds nothing)."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s %(args)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield text
    root.removeHandler(handler)
    root.setLevel(level)


def test_secrets_never_leak_through_a_full_scenario(tmp_path, monkeypatch, unique, debug_logs,
                                                    report):
    conf = lab_config.write(tmp_path)
    state = tmp_path / "state"
    monkeypatch.setattr(attach, "STATE", tmp_path / "host.json")
    printed, asked = [], []  # output without --show-secrets; output that asked for them

    def sb(*args, expect=0):
        rc, out, err = cli.run_captured(["--config", str(conf), *args])
        (asked if "--show-secrets" in args else printed).extend([out, err])
        assert rc == expect, (args, out, err)
        return json.loads(out) if "--json" in args and rc == 0 and out.strip() else out

    others, made = [], []  # (protocol, volume, attachment, connected here)
    try:
        for protocol, proto in (("iscsi", "iSCSI"), ("nvmet_tcp", "NVMe-oF")):
            vtype = f"leak-{protocol}"
            sb("type-create", vtype)
            sb("type-key", vtype, "set", "multiattach=<is> True", f"storage_protocol={proto}")
            vol = sb("--json", "create", "--volume-type", vtype, "--name", f"leak-{unique}", "1")
            # this host, through the host side (os-brick; a host record; nvme-cli keys).
            # Quick mode: NVMe only (an os-brick iSCSI login costs most of a minute
            # under emulation); the second identity below covers iSCSI's secrets.
            here = MODE == "full" or protocol == "nvmet_tcp"
            if here:
                sb("--json", "connect", vol["id"])
            # a second identity, through the CLI's connector JSON
            other = Host(protocol, f"leak-{protocol[:4]}-{unique}")
            others.append(other)
            att = sb("--json", "attachment-create", vol["id"], "--connect", "true",
                     f"--connector={json.dumps(other.connector('other-host'))}")
            data = att["connection_info"]["data"]
            masked = [k for k in output.SECRET_KEYS if k in data]
            assert masked and all(data[k] == output.MASK for k in masked), data
            full = sb("--json", "--show-secrets", "attachment-show", att["id"])
            other.attach(full["connection_info"])  # the secrets are real: they let it in
            sb("attachment-complete", att["id"])
            made.append((protocol, vol, att, here))
        # both volumes in use by two hosts each: everything that reads them, once
        secrets = node_secrets(state)  # every secret handed out, while they are admitted
        files = [p for pattern in PRIVATE_FILES for p in state.glob(pattern)]
        sb("attachment-show", made[0][2]["id"])
        sb("--debug", "--json", "attachment-list")
        sb("list")
        sb("--json", "guard")
        sb("events")
        sb("--json", "reconcile")
        protocol, vol = made[0][:2]
        bad = {"initiator" if protocol == "iscsi" else "nqn": "../../etc/passwd"}
        sb("attachment-create", vol["id"], "--connect", "true",
           f"--connector={json.dumps(bad)}", expect=2)
        for (_, vol, att, here), other in zip(made, others, strict=True):
            other.disconnect()
            sb("attachment-delete", att["id"])
            if here:
                sb("--json", "disconnect", vol["id"])
            sb("delete", vol["id"])
    finally:
        for other in others:
            other.cleanup()

    hosts_iscsi = 2 if MODE == "full" else 1
    assert len(secrets) >= hosts_iscsi + 2 * 2, "CHAP secrets and two pairs of DH-HMAC-CHAP keys"
    corpus = {"logs": debug_logs.getvalue(), "output": "\n".join(printed)}
    assert "admitted" in corpus["logs"], "the DEBUG logs were captured"
    leaks = [(where, s[:6] + "...") for s in secrets for f in forms(s)
             for where, text in corpus.items() if f in text]
    shown = "\n".join(asked)
    assert any(s in shown for s in secrets), "--show-secrets shows them: the search can see"

    files += [tmp_path / "host.json"]
    files.append(Path("/etc/nvme/config.json"))  # nvme-cli's keys, written by the host side
    open_files = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in files
                  if p.exists() and p.stat().st_mode & 0o077]
    report(tried=len(secrets), survived=len(secrets) - len({s for s, _ in leaks}),
           lost=len(leaks), unit="secrets", searched_bytes=sum(map(len, corpus.values())),
           open_files=len(open_files))
    assert not leaks, leaks
    assert not open_files, open_files
    assert (state / "shareblock.sqlite").exists() and any(p.suffix == ".key" for p in files)
    assert any(p.parent.parent.name == "node" for p in files), "the node's documents checked"


def test_ssh_paths_refuse_unknown_and_changed_host_keys(sshd, tmp_path, capsys, report):
    """The three SSH clients (targets over SSH, the host's SshControl, `shareblock
    --control`) refuse a node whose key is not known (no known_hosts given, or an
    empty one) or not the one known. test_remote.py shows targets refusing an empty
    known_hosts; quick mode adds the host's SshControl, `--control` and a changed key,
    full mode every client with every known_hosts."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    changed = tmp_path / "changed_known_hosts"  # the node's name with another key
    changed.write_text("[127.0.0.1]:2222 " + " ".join(
        (tmp_path / "k.pub").read_text().split()[:2]) + "\n")
    refused = "unknown host key|host key changed"

    def target(known_hosts):
        open_target("iscsi", [Portal("127.0.0.1", 3260)], node=sshd["url"],
                    known_hosts=known_hosts, key_filename=sshd["key"],
                    agent_command=sshd["agent"]).actual()

    def control(known_hosts):
        SshControl(sshd["url"], known_hosts, sshd["key"]).show("any")

    def cli_control(known_hosts):
        assert cli_remote.run(sshd["url"], ["list"], known_hosts, sshd["key"]) == 1
        raise TargetError(capsys.readouterr().err)

    known = {"default": None, "empty": sshd["empty"], "changed": str(changed)}
    cases = [(c, k) for c in (target, control, cli_control) for k in known]
    if MODE != "full":
        cases = [(control, "default"), (control, "empty"), (control, "changed"),
                 (target, "changed"), (cli_control, "empty"), (cli_control, "changed")]
    kept_out = 0
    for client, name in cases:
        with pytest.raises(TargetError, match=refused):
            client(known[name])
        kept_out += 1
    report(tried=len(cases), survived=kept_out, lost=len(cases) - kept_out,
           unit="connections")
