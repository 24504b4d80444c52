import io
import json

import pytest

from shareblock.targets import agent, names
from shareblock.targets.remote import decode_actual, decode_connection, encode, parse_node
from shareblock.targets.base import ActualExport, ActualHost, Connection, Portal


@pytest.mark.parametrize("url,expected", [
    ("ssh://root@node1", ("root", "node1", 22)),
    ("ssh://admin@10.0.0.5:2222", ("admin", "10.0.0.5", 2222)),
    ("ssh://[::1]:22", ("root", "::1", 22)),
])
def test_parse_node(url, expected):
    assert parse_node(url) == expected


@pytest.mark.parametrize("url", ["node1", "http://node1", "ssh://", "ssh://a@b:99999",
                                 "ssh://a;rm -rf@b", "ssh://a@b/path"])
def test_parse_node_refuses(url):
    with pytest.raises(names.InvalidName):
        parse_node(url)


def test_results_round_trip_through_json():
    conn = Connection("iscsi", "iqn.2026-11.io.x:v", [Portal("::1", 3260)], lun=0, mode="ro")
    assert decode_connection(json.loads(json.dumps(encode(conn)))) == conn
    actual = {"v": ActualExport("v", "/dev/x", {"h": ActualHost("h", "rw", True, {"n": 1})})}
    assert decode_actual(json.loads(json.dumps(encode(actual)))) == actual


@pytest.mark.parametrize("request_", [
    {"op": "rm -rf /", "protocol": "iscsi", "portals": []},
    {"op": "admit", "protocol": "iscsi", "portals": [{"address": "127.0.0.1", "port": 3260}],
     "args": {"volume_id": "../x", "host": "iqn.2026-11.io.x:h", "mode": "rw"}},
    {"op": "actual", "protocol": "fc", "portals": [{"address": "127.0.0.1", "port": 1}]},
    {"op": "actual", "protocol": "iscsi", "portals": [{"address": "$(reboot)", "port": 1}]},
    {"op": "export"},
])
def test_agent_refuses_bad_requests(request_):
    reply = agent.handle(request_)
    assert reply["ok"] is False and reply["message"]


def test_agent_main_answers_json_even_for_garbage(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert agent.main([]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_agent_answers_every_line_of_a_session(monkeypatch, capsys):
    lines = ['{"op": "nope", "portals": []}', "", "not json",
             '{"op": "actual", "protocol": "fc", "portals": []}']
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert agent.main([]) == 1
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["ok"] for r in replies] == [False, False, False]  # the blank line is skipped
    assert "unknown operation" in replies[0]["message"]
    assert "fc" in replies[2]["message"]


class Session:
    """One exec'd agent as paramiko gives it: lines written, lines read back."""

    def __init__(self, ssh):
        self.ssh, self.written, self.closed = ssh, "", False
        self.channel = self

    def write(self, data):
        self.written += data

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def readline(self):
        if self.ssh.dead:
            raise OSError("Socket is closed")
        request, self.written = json.loads(self.written), ""
        self.ssh.requests.append(request["op"])
        return json.dumps({"ok": True, "result": {}}).encode() + b"\n"


class Ssh:
    def __init__(self):
        self.execs, self.requests, self.dead = 0, [], False

    def exec_command(self, line, timeout=None):
        self.execs += 1
        session = Session(self)
        return session, session, session

    def close(self):
        pass


def test_remote_target_starts_one_agent_per_connection(monkeypatch):
    from shareblock.targets.remote import RemoteTarget, Unreachable
    fake = Ssh()
    monkeypatch.setattr("shareblock.targets.ssh.connect", lambda *a, **k: fake)
    target = RemoteTarget("ssh://root@node", "iscsi", [Portal("127.0.0.1", 3260)], "p")
    for _ in range(3):
        target.actual()
    assert (fake.execs, fake.requests) == (1, ["actual"] * 3)
    fake.dead = True
    with pytest.raises(Unreachable, match="connection lost during actual"):
        target.actual()
    fake.dead = False
    target.actual()  # a new session after the lost one
    assert fake.execs == 2


def test_threads_sharing_a_remote_target_each_get_their_own_reply(monkeypatch):
    """Cinder calls a driver from several green threads: one agent pipe, one request
    at a time, or replies would cross."""
    import threading
    import time

    from shareblock.targets.remote import RemoteTarget

    class Echo(Session):
        def readline(self):
            time.sleep(0.0005)  # let another thread in, if it can get in
            request, self.written = json.loads(self.written), ""
            return json.dumps({"ok": True, "result": request["args"]}).encode() + b"\n"

    fake = Ssh()
    fake.exec_command = lambda line, timeout=None: (Echo(fake),) * 3
    monkeypatch.setattr("shareblock.targets.ssh.connect", lambda *a, **k: fake)
    target = RemoteTarget("ssh://root@node", "iscsi", [Portal("127.0.0.1", 3260)], "p")
    crossed = []

    def caller(k):
        for i in range(20):
            try:
                got = target.call("actual", volume_id=f"v{k}-{i}")
            except Exception as e:  # two requests in one read: the fake cannot parse them
                got = e
            if got != {"volume_id": f"v{k}-{i}"}:
                crossed.append(got)
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert crossed == []


def test_the_agent_tells_a_remote_exporter_the_nodes_restore_and_reservations(tmp_path):
    """What shareblock-exporter and the driver's stats ask a node reached over SSH."""
    from shareblock.targets.desired import DesiredStore
    base = {"protocol": "iscsi", "prefix": "iqn.2026-11.io.x",
            "portals": [{"address": "127.0.0.1", "port": 3260}]}
    state = str(tmp_path / "node")
    reply = agent.handle({**base, "op": "last_restore"}, state_dir=state)
    assert reply == {"ok": True, "result": None}, "no restore ran yet"
    DesiredStore(state).mark_restored({"exports": 2, "hosts": 3, "failed": []})
    reply = agent.handle({**base, "op": "last_restore"}, state_dir=state)
    assert reply["ok"] and (reply["result"]["exports"], reply["result"]["failed"]) == (2, 0)
    reply = agent.handle({**base, "op": "shares_reservations"}, state_dir=state)
    assert reply == {"ok": True, "result": True}, "LIO: one domain per LUN"
