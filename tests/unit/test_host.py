"""Host side without a kernel: keys for nvme-cli, identities, rollback on failure."""
import json
import os
import stat
import time

import pytest

from shareblock.cli import output
from shareblock.host import attach, brick, devices
from shareblock.initiator import nvme_config

NVME_INFO = {"driver_volume_type": "nvmeof", "data": {
    "target_nqn": "nqn.2026-11.io.shareblock:v1:h-abc", "vol_uuid": "1234",
    "portals": [["127.0.0.1", 4420, "tcp"]], "access_mode": "rw",
    "dhchap_secret": "DHHC-1:00:aaa:", "dhchap_ctrl_secret": "DHHC-1:00:bbb:"}}
ISCSI_INFO = {"driver_volume_type": "iscsi", "data": {
    "target_iqn": "iqn.2026-11.io.shareblock:v1", "target_portal": "127.0.0.1:3260",
    "target_lun": 0, "auth_password": "secret-1234567", "access_mode": "rw",
    "shareblock_serial": "0f8fad5b-d9cb-469f-a165-70867728950e"}}


def test_nvme_keys_go_to_nvme_clis_config_privately(tmp_path, monkeypatch):
    monkeypatch.setattr(nvme_config, "NVME_CONFIG", str(tmp_path / "config.json"))
    nvme_config.nvme_keys("nqn.host", NVME_INFO["data"])
    nvme_config.nvme_keys("nqn.host", NVME_INFO["data"])  # idempotent
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == [{"hostnqn": "nqn.host", "dhchap_key": "DHHC-1:00:aaa:", "subsystems": [
        {"nqn": NVME_INFO["data"]["target_nqn"], "ports": [
            {"transport": "tcp", "traddr": "127.0.0.1", "trsvcid": "4420",
             "dhchap_key": "DHHC-1:00:bbb:"}]}]}]
    assert stat.S_IMODE(os.stat(tmp_path / "config.json").st_mode) == 0o600
    nvme_config.forget_nvme_keys("nqn.host", NVME_INFO["data"]["target_nqn"])
    assert json.loads((tmp_path / "config.json").read_text())[0]["subsystems"] == []


def test_identities():
    assert devices.identity(NVME_INFO) == "uuid.1234"
    assert devices.identity(ISCSI_INFO) == "0f8fad5bd9cb469fa16570867"


class FakeControl:
    def __init__(self, info):
        self.info, self.deleted, self.completed = info, [], []

    def show(self, volume):
        return {"id": "v1", "name": volume}

    def attachment_create(self, volume, connector, mode):
        return {"id": "att-1", "connection_info": self.info, "reason": None}

    def attachment_complete(self, att_id):
        self.completed.append(att_id)

    def attachment_delete(self, att_id):
        self.deleted.append(att_id)


class FakeConnector:
    def __init__(self):
        self.disconnected = []

    def connect_volume(self, data):
        return {"path": "/dev/sdz", "type": "block"}

    def disconnect_volume(self, data, device_info, force=False, ignore_errors=False):
        self.disconnected.append(device_info)


def test_device_never_appearing_rolls_everything_back(tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "STATE", tmp_path / "host.json")
    monkeypatch.setattr(brick, "connector_properties",
                        lambda mode: {"initiator": "iqn.2026-11.io.x:h", "mode": mode})
    conn = FakeConnector()
    monkeypatch.setattr(brick, "connector_for", lambda info: conn)

    def never(info, hint, timeout):
        raise devices.DeviceNotFound("no block device appeared")
    monkeypatch.setattr(devices, "wait_for_device", never)
    control = FakeControl(ISCSI_INFO)
    with pytest.raises(attach.AttachError, match="no block device"):
        attach.connect(control, "v1")
    assert control.deleted == ["att-1"] and control.completed == []
    assert conn.disconnected == [{"path": "/dev/sdz", "type": "block"}]
    assert attach.status() == []


@pytest.fixture
def host(tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "STATE", tmp_path / "host.json")
    monkeypatch.setattr(brick, "connector_properties",
                        lambda mode: {"initiator": "iqn.2026-11.io.x:h", "mode": mode})
    monkeypatch.setattr(brick, "connector_for", lambda info: FakeConnector())
    monkeypatch.setattr(devices, "wait_for_device", lambda info, hint, timeout: "/dev/sdz")
    return tmp_path


def test_connect_records_without_secrets(host):
    tmp_path = host
    control = FakeControl(ISCSI_INFO)
    rec = attach.connect(control, "v1")
    assert rec["device"] == "/dev/sdz" and control.completed == ["att-1"]
    assert "secret-1234567" not in (tmp_path / "host.json").read_text()
    assert stat.S_IMODE(os.stat(tmp_path / "host.json").st_mode) == 0o600
    assert attach.connect(control, "v1") == rec  # already connected: nothing new


@pytest.mark.parametrize("info", [None, {}, {"driver_volume_type": "iscsi"}])
def test_no_connection_info_deletes_the_attachment(host, info):
    control = FakeControl(info)
    with pytest.raises(attach.AttachError, match="no connection info"):
        attach.connect(control, "v1")
    assert control.deleted == ["att-1"] and attach.status() == []


def test_a_crash_before_the_complete_is_completed_by_the_next_connect(host):
    class Crashing(FakeControl):
        def attachment_complete(self, att_id):
            raise SystemExit("killed")  # not an Exception: no rollback, as in a kill
    with pytest.raises(SystemExit):
        attach.connect(Crashing(ISCSI_INFO), "v1")
    control = FakeControl(ISCSI_INFO)
    rec = attach.connect(control, "v1")
    assert control.completed == ["att-1"] and rec["completed"], "completed, not attached again"
    assert attach.connect(control, "v1") == rec and control.completed == ["att-1"]


def test_a_failed_undo_still_deletes_the_attachment(host, monkeypatch):
    class Stuck(FakeConnector):
        def disconnect_volume(self, *a, **k):
            raise OSError("device busy")
    monkeypatch.setattr(brick, "connector_for", lambda info: Stuck())

    class Refusing(FakeControl):
        def attachment_complete(self, att_id):
            raise RuntimeError("Cinder said no")
    control = Refusing(ISCSI_INFO)
    with pytest.raises(attach.AttachError, match="Cinder said no"):
        attach.connect(control, "v1")
    assert control.deleted == ["att-1"] and attach.status() == []


def test_cinder_control_speaks_cinders_attachment_api():
    """python-cinderclient against a minimal HTTP stand-in for Cinder's API: the
    noauth headers, the microversion, the paths and bodies Cinder expects, and
    the flat connection info of Cinder's attachment API made os-brick-shaped."""
    import http.server
    import threading
    from shareblock.host.control import CinderControl, ControlFailed
    vol_id, att_id = "6f1f1b6a-1111-4c4c-9a9a-000000000001", "a7"
    seen = []

    class Cinder(http.server.BaseHTTPRequestHandler):
        def _reply(self, code, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.command, self.path, self.headers.get("X-Auth-Token"),
                         self.headers.get("OpenStack-API-Version"), body))

        def do_GET(self):
            self._record()
            if self.path == f"/v3/proj/volumes/{vol_id}":
                return self._reply(200, {"volume": {"id": vol_id, "name": "shared"}})
            self._reply(404, {"itemNotFound": {"message": "Volume could not be found.",
                                               "code": 404}})

        def do_POST(self):
            self._record()
            if self.path == "/v3/proj/attachments":
                return self._reply(200, {"attachment": {
                    "id": att_id, "status": "attaching", "connection_info": {
                        "driver_volume_type": "iscsi", **ISCSI_INFO["data"]}}})
            self._reply(204)

        def do_DELETE(self):
            self._record()
            self._reply(200, {"attachments": []})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cinder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"OS_AUTH_TYPE": "noauth", "OS_USER_ID": "admin", "OS_PROJECT_ID": "proj",
           "OS_ENDPOINT": f"http://127.0.0.1:{server.server_port}/v3"}
    try:
        control = CinderControl(env)
        assert control.show(vol_id)["name"] == "shared"
        att = control.attachment_create(vol_id, {"initiator": "iqn.2026-11.io.test:h1"}, "ro")
        assert att["connection_info"] == ISCSI_INFO, "os-brick's shape, data nested"
        control.attachment_complete(att_id)
        control.attachment_delete(att_id)
        with pytest.raises(ControlFailed, match="Cinder: No volume with a name or ID"):
            control.show("6f1f1b6a-1111-4c4c-9a9a-00000000dead")
    finally:
        server.shutdown()
    calls = [(m, p) for m, p, *_ in seen]
    assert ("POST", "/v3/proj/attachments") in calls
    assert ("POST", f"/v3/proj/attachments/{att_id}/action") in calls
    assert ("DELETE", f"/v3/proj/attachments/{att_id}") in calls
    create = next(s for s in seen if s[1] == "/v3/proj/attachments")
    assert create[2] == "admin:proj" and create[3] == "volume 3.54"
    assert create[4] == {"attachment": {"volume_uuid": vol_id, "mode": "ro",
                                        "connector": {"initiator": "iqn.2026-11.io.test:h1"}}}
    complete = next(s for s in seen if s[1].endswith("/action"))
    assert complete[4] == {"os-complete": None}
    with pytest.raises(ControlFailed, match="Cinder credentials"):
        CinderControl({"OS_AUTH_TYPE": "password"})  # no auth URL, no user


def test_hosts_status_says_when_each_volume_was_attached(tmp_path, monkeypatch):
    """hosts-status: one row per attached volume with its time (UTC in the record
    and --json; the table shows it in the local zone)."""
    monkeypatch.setattr(attach, "STATE", tmp_path / "host.json")
    monkeypatch.setattr(brick, "connector_properties",
                        lambda mode: {"initiator": "iqn.2026-11.io.x:h", "mode": mode})
    monkeypatch.setattr(brick, "connector_for", lambda info: FakeConnector())
    monkeypatch.setattr(devices, "wait_for_device", lambda info, hint, timeout: "/dev/sdz")
    monkeypatch.setattr(attach, "session_state", lambda rec: "LOGGED_IN")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        attach.connect(FakeControl(ISCSI_INFO), "v1")
        [row] = attach.status()
        assert row["device"] == "/dev/sdz" and row["session"] == "LOGGED_IN"
        stamp = row["attached_at"]
        assert stamp and "+" not in stamp and stamp.count(":") == 2, stamp
        shown = output.localized([row])[0]["attached_at"]
        assert shown.endswith(" JST") and shown != stamp
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
