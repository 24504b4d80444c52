"""Fencing at the target: a node's hosts cut off from its volumes (every one, or a
set), other hosts untouched, attachments kept, no new attach until unfence, kept
out by reconcile and by the node's documents (what a reboot's restore replays),
readmitted with their modes at unfence; every fence and unfence an event."""
import json

import pytest

from shareblock.cli.main import run_captured
from shareblock.control.api import Conflict, InvalidInput, NotFound
from shareblock.control.policy import PolicyNotAuthorized
from tests.unit.test_control import cli_plane, env, hosts_on_target, iscsi  # noqa: F401

A, B = "iqn.2026-11.io.test:host1", "iqn.2026-11.io.test:host2"


@pytest.fixture
def cp(cli_plane):  # noqa: F811
    return cli_plane


def attach(cp, vid, n, mode="rw"):
    att = cp.attachment_create(vid, iscsi(n), mode=mode)
    cp.attachment_complete(att["id"])
    return att


def recorded_hosts(cp, vid):
    doc = cp.driver("lio").recorded_exports().get(vid)
    return {a.host: a.mode for a in doc.hosts} if doc else {}


def test_fence_cuts_the_nodes_hosts_off_everywhere_and_unfence_readmits(cp):
    v1 = cp.create(1, "multiattach", name="v1")["id"]
    v2 = cp.create(1, "multiattach", name="v2")["id"]
    attach(cp, v1, 1)
    attach(cp, v1, 2)
    attach(cp, v2, 1, mode="ro")
    shown = cp.fence("h1")
    assert shown["status"] == "off" and shown["fenced"] and shown["hosts"] == [A]
    assert shown["admitted"] == [] and shown["volumes"] is None
    assert hosts_on_target(cp, v1) == {B: "rw"}, "the other host keeps its access"
    assert hosts_on_target(cp, v2) == {}
    assert recorded_hosts(cp, v1) == {B: "rw"}, "a reboot's restore keeps it out"
    assert len(cp.attachment_list(v1)) == 2, "attachments stay"
    assert cp.show(v1)["status"] == "in-use"
    assert cp.reconcile()["admitted"] == [], "reconcile keeps it out"
    assert hosts_on_target(cp, v1) == {B: "rw"}
    assert cp.fence("h1")["status"] == "off", "idempotent"

    shown = cp.unfence("h1")
    assert shown["status"] == "on" and not shown["fenced"]
    assert hosts_on_target(cp, v1) == {A: "rw", B: "rw"}
    assert hosts_on_target(cp, v2) == {A: "ro"}, "readmitted with its modes"
    assert [e["action"] for e in cp.events() if e["host"] == "h1"] == [
        "fenced", "unfenced"], "a fence as it was records nothing new"
    assert cp.unfence("h1")["status"] == "on", "idempotent"


def test_a_fenced_node_gets_no_new_attach_under_any_name(cp):
    vid = cp.create(1, "multiattach")["id"]
    attach(cp, vid, 1)
    cp.fence("h1")
    with pytest.raises(Conflict, match="node h1 is fenced"):
        cp.attachment_create(vid, iscsi(1))
    # the same initiator under another host name is still the fenced node's host
    with pytest.raises(Conflict, match="fenced"):
        cp.attachment_create(vid, {"initiator": A, "host": "elsewhere"})
    other = cp.create(1, "multiattach")["id"]
    with pytest.raises(Conflict):
        cp.attachment_create(other, iscsi(1))
    assert hosts_on_target(cp, vid) == {}
    cp.unfence("h1")
    attach(cp, other, 1)
    assert hosts_on_target(cp, other) == {A: "rw"}


def test_fence_from_some_volumes_only(cp):
    v1 = cp.create(1, "multiattach", name="v1")["id"]
    v2 = cp.create(1, "multiattach", name="v2")["id"]
    attach(cp, v1, 1)
    attach(cp, v2, 1)
    shown = cp.fence("h1", ["v1"])
    assert shown["status"] == "off" and shown["volumes"] == [v1]
    assert hosts_on_target(cp, v1) == {} and hosts_on_target(cp, v2) == {A: "rw"}
    shown = cp.fence("h1", ["v2"])  # widens it
    assert shown["volumes"] == sorted([v1, v2]) and hosts_on_target(cp, v2) == {}


def test_detaching_a_fenced_nodes_attachment_works(cp):
    vid = cp.create(1, "multiattach")["id"]
    att = attach(cp, vid, 1)
    attach(cp, vid, 2)
    cp.fence("h1")
    cp.attachment_delete(att["id"])
    assert hosts_on_target(cp, vid) == {B: "rw"}
    assert cp.fence_status("h1")["status"] == "off"


def test_bad_and_unknown_nodes_and_policy(cp, env):  # noqa: F811
    with pytest.raises(InvalidInput):
        cp.fence("../etc")
    with pytest.raises(InvalidInput):
        cp.fence("")
    with pytest.raises(NotFound):
        cp.fence_status("nobody")
    assert cp.db.query("SELECT * FROM fences") == []
    member = env(user="alice")
    with pytest.raises(PolicyNotAuthorized):
        member.fence("h1")


def test_fence_commands_in_json(cp):
    vid = cp.create(1, "multiattach", name="v")["id"]
    attach(cp, vid, 1)
    attach(cp, vid, 2)
    rc, out, err = run_captured(["fence", "h1", "--json"])
    assert rc == 0, err
    assert json.loads(out)["status"] == "off"
    rc, out, _ = run_captured(["--json", "fence-list"])
    listed = {n["node"]: n["status"] for n in json.loads(out)}
    assert listed == {"h1": "off", "h2": "on"}
    rc, out, _ = run_captured(["fence-status", "h1", "--json"])
    assert json.loads(out)["hosts"] == [A]
    rc, out, _ = run_captured(["unfence", "h1", "--json"])
    assert rc == 0 and json.loads(out)["status"] == "on"
    rc, _, err = run_captured(["fence-status", "ghost"])
    assert rc == 3 and err.startswith("shareblock: error:")
    rc, out, _ = run_captured(["--json", "events"])
    assert [e["action"] for e in json.loads(out)] == ["fenced", "unfenced"]


def test_a_nodes_attachments_are_found_through_an_index_not_a_scan(cp, monkeypatch):
    """fence, fence-status and fence-list cost the node's attachments (schema 5's
    index on the connector's `host`), and a fence reads only its volumes' node
    documents, whatever the number of other volumes."""
    from shareblock.control import fencing
    plan = cp.db.query("EXPLAIN QUERY PLAN SELECT * FROM attachments WHERE "
                       f"{fencing.NODE_OF} = ?", ("h1",))
    assert any("attachments_node" in row["detail"] for row in plan), [dict(r) for r in plan]
    vids = [cp.create(1, "multiattach", name=f"v{i}")["id"] for i in range(3)]
    for vid in vids:
        attach(cp, vid, 2)
    attach(cp, vids[0], 1)
    drv = cp.driver("lio")
    asked = []
    real = drv.recorded_exports
    monkeypatch.setattr(drv, "recorded_exports",
                        lambda volume_id=None: (asked.append(volume_id), real(volume_id))[1])
    assert cp.fence("h1")["status"] == "off"
    assert asked == [vids[0]], "only the fenced node's volume's document"
    assert {n["node"] for n in cp.fence_list()} == {"h1", "h2"}


def test_a_fenced_nodes_attach_exits_4_as_every_conflict(cp, capsys):
    vid = cp.create(1, "multiattach", name="v1")["id"]
    attach(cp, vid, 1)
    cp.fence("h1")
    rc, out, err = run_captured(["attachment-create", vid, "--connect", "true",
                                 "--initiator", A, "--host", "h1"])
    assert rc == 4 and "fenced" in err, (rc, err)
