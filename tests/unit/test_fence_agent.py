"""fence_shareblock as Pacemaker runs it: options on stdin (or the command line),
the fence agents' actions and exit codes, against the control plane's fencing."""
import io
import xml.etree.ElementTree as ET

import pytest

from shareblock.fence import agent
from tests.unit.test_control import cli_plane, env, hosts_on_target, iscsi  # noqa: F401

A, B = "iqn.2026-11.io.test:host1", "iqn.2026-11.io.test:host2"


@pytest.fixture
def cp(cli_plane, tmp_path, monkeypatch):  # noqa: F811
    conf = tmp_path / "shareblock.conf"  # the agent's config option: any file will do
    conf.write_text("[DEFAULT]\n")
    monkeypatch.setattr(agent, "DEFAULT_CONFIG", str(conf))
    return cli_plane


def fence(monkeypatch, capsys, stdin: str) -> tuple[int, str, str]:
    """The agent run with no arguments, its options on stdin (Pacemaker's way)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = agent.main([])
    out, err = capsys.readouterr()
    return rc, out, err


def test_stdin_lines_as_the_fence_agents_api_says():
    opts = agent.parse_stdin('# comment\n\n action=OFF\nport=n1\nnodeid=2\nconfig="/x.conf"\n'
                             "plug=n2\nknown-hosts=/k\n")
    assert opts == {"action": "OFF", "plug": "n2", "config": "/x.conf", "known_hosts": "/k"}


def test_metadata_declares_fabric_fencing_without_reboot(capsys):
    assert agent.main(["-o", "metadata"]) == 0
    root = ET.fromstring(capsys.readouterr().out.split("\n", 1)[1])
    actions = {a.get("name"): a.attrib for a in root.find("actions")}
    assert "reboot" not in actions and actions["on"]["automatic"] == "1"
    assert "on_target" not in actions["on"], "on runs against the target, from any node"
    params = {p.get("name"): p for p in root.find("parameters")}
    assert params["action"].find("content").get("default") == "off"
    assert {"plug", "port", "config", "control"} <= set(params)
    for p in params.values():  # metadata.rng wants getopt, content, shortdesc
        assert p.find("getopt") is not None and p.find("content") is not None


def test_unknown_actions_and_reboot_fail_as_pacemaker_reads_them(monkeypatch, capsys):
    rc, _, err = fence(monkeypatch, capsys, "action=reboot\nplug=n1\n")
    assert rc == 1 and "Unrecognised action 'reboot'" in err


def test_off_status_list_on_through_the_control_plane(cp, monkeypatch, capsys):
    vid = cp.create(1, "multiattach")["id"]
    for n in (1, 2):
        cp.attachment_complete(cp.attachment_create(vid, iscsi(n))["id"])
    rc, out, _ = fence(monkeypatch, capsys, "action=status\nnodename=h1\nport=h1\n")
    assert (rc, out.strip()) == (0, "Status: ON")
    rc, out, _ = fence(monkeypatch, capsys, "nodename=h1\nport=h1\n")  # off by default
    assert (rc, out.strip()) == (0, "Success: Powered OFF")
    assert hosts_on_target(cp, vid) == {B: "rw"}
    rc, out, _ = fence(monkeypatch, capsys, "action=off\nplug=h1\n")
    assert (rc, out.strip()) == (0, "Success: Already OFF")
    rc, out, _ = fence(monkeypatch, capsys, "action=status\nplug=h1\n")
    assert (rc, out.strip()) == (2, "Status: OFF")
    rc, out, _ = fence(monkeypatch, capsys, "action=list-status\n")
    assert (rc, out.split()) == (0, ["h1,,off", "h2,,on"])
    rc, out, _ = fence(monkeypatch, capsys, "action=list\n")
    assert out.split() == ["h1,", "h2,"]
    assert fence(monkeypatch, capsys, "action=monitor\n")[0] == 0
    rc, out, _ = fence(monkeypatch, capsys, "action=on\nplug=h1\n")
    assert (rc, out.strip()) == (0, "Success: Powered ON")
    assert hosts_on_target(cp, vid) == {A: "rw", B: "rw"}
    assert [e["action"] for e in cp.events()] == ["fenced", "unfenced"]
    # the command line too (-o, -n), for people
    assert agent.main(["-o", "status", "-n", "h1"]) == 0


def test_unknown_nodes_and_validation(cp, monkeypatch, capsys):
    rc, _, err = fence(monkeypatch, capsys, "action=status\nplug=ghost\n")
    assert rc == 1 and "not known" in err  # Pacemaker: this device cannot fence it
    rc, out, _ = fence(monkeypatch, capsys, "action=on\nplug=ghost\n")
    assert (rc, out.strip()) == (0, "Success: Powered ON"), "nothing to readmit"
    rc, _, err = fence(monkeypatch, capsys, "action=off\n")
    assert rc == 1 and "plug" in err
    # validate-all: the options only (Pacemaker passes a dummy plug=node1)
    assert fence(monkeypatch, capsys, "action=validate-all\nplug=node1\n")[0] == 0
    rc, _, err = fence(monkeypatch, capsys, "action=validate-all\nconfig=/nonexistent\n")
    assert rc == 1 and "config" in err
    rc, _, err = fence(monkeypatch, capsys, "action=off\nplug=bad name\n")
    assert rc == 1 and "node name" in err
    assert cp.db.query("SELECT * FROM fences") == []
