"""Real Cinder (PyPI cinder 29.x) loads shareblock's driver, on real targets.

API (WSGI on 127.0.0.1), scheduler and volume services in one process, SQLite,
in-process messaging: Cinder's own functional test base. The volume service runs
as cinder-volume does for `enabled_backends = shareblock`, with its own config
section, and `volume_driver = shareblock.driver.cinder.ShareBlockDriver`.
Run in the lab (needs LIO/nvmet): see scripts/test.sh (pytest or testtools).
"""
import os
import sys
import tempfile
import uuid

from oslo_config import cfg

from cinder import service
from cinder.tests.functional import functional_helpers
from cinder.tests.functional.api import client
from cinder.volume import driver as cinder_driver
from cinder.volume import manager as volume_manager
from shareblock.driver import options
from shareblock.targets.factory import local_target
from shareblock.targets.base import Portal

CONF = cfg.CONF
SECRET_KEY = "lab-only-key-" + "0123456789abcdef"  # in cinder.conf, the same on every node
BACKEND = "shareblock"
HOST = f"labhost@{BACKEND}"
# cinder-volume registers per-backend options when it builds Configuration;
# the flags below must land in that group before the service starts.
for opts in (volume_manager.volume_backend_opts, cinder_driver.volume_opts,
             options.SHAREBLOCK_OPTS):
    CONF.register_opts(opts, group=BACKEND)


def system_initiator() -> str:
    with open("/etc/iscsi/initiatorname.iscsi") as f:
        return next(line.split("=", 1)[1].strip() for line in f if line.startswith("Initiator"))


def system_hostnqn() -> str:
    with open("/etc/nvme/hostnqn") as f:
        return f.read().strip()


class _ShareBlockCinder(functional_helpers._FunctionalTestBase):
    _osapi_version = "3.54"       # attachments with mode
    PROTOCOL = "iscsi"
    MULTIATTACH = True

    def _get_flags(self):
        flags = super()._get_flags()
        # Under emulation a test runs for minutes; the test services send no heartbeat,
        # so the scheduler would call the volume service down after the default 60 s.
        flags["service_down_time"] = {"v": 3600}
        flags["rpc_response_timeout"] = {"v": 600}  # an attach takes seconds under emulation
        self.workdir = tempfile.mkdtemp(prefix="sb-cinder-")
        port = 3260 if self.PROTOCOL == "iscsi" else 4420
        for name, value in {
                "volume_driver": "shareblock.driver.cinder.ShareBlockDriver",
                "volume_backend_name": f"lab-{self.PROTOCOL}",
                "target_protocol": self.PROTOCOL, "target_ip_address": "127.0.0.1",
                "target_port": port, "shareblock_multiattach": self.MULTIATTACH,
                "shareblock_pool": f"file:{self.workdir}/volumes",
                "shareblock_secret_key": SECRET_KEY,
                "shareblock_node_state_path": f"{self.workdir}/node",
                "shareblock_state_path": f"{self.workdir}/state",
                # no OpenStack third-party CI: Cinder calls the driver unsupported
                "enable_unsupported_driver": True}.items():
            flags[name] = {"v": value, "g": BACKEND}
        return flags

    def start_service(self, name, host=None, **kwargs):
        if name == "volume":  # as cinder-volume runs a backend of enabled_backends
            host = HOST
            kwargs.setdefault("service_name", BACKEND)
        return super().start_service(name, host=host, **kwargs)

    def _start_api_service(self):
        # pip installs Cinder's etc/ files under <venv>/etc/cinder, not where the base looks
        etc = os.path.join(sys.prefix, "etc", "cinder")
        CONF.api_paste_config = os.path.join(etc, "api-paste.ini")
        CONF.resource_query_filters_file = os.path.join(etc, "resource_filters.json")
        self.osapi = service.WSGIService("osapi_volume")
        self.osapi.start()
        self.auth_url = f"http://{self.osapi.host}:{self.osapi.port}/v{self.osapi_version_major}"

    def setUp(self):
        super().setUp()
        self.wait_for_backend()

    def _common_cleanup(self):
        # Cinder's cleanup deletes every public attribute, pytest's bound test
        # method among them, which pytest then fails to delete: keep it.
        keep = {k: v for k, v in self.__dict__.items() if k.startswith("test_")}
        super()._common_cleanup()
        self.__dict__.update(keep)

    def wait_for_backend(self, timeout=600):
        """The scheduler learns a backend's capabilities by RPC, after the volume
        service starts; under emulation that takes a while. Wait for the pool."""
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pools = self.api.api_get("/scheduler-stats/get_pools")["pools"]
            if any(p["name"].startswith(HOST) for p in pools):
                return
            time.sleep(1)
        self.fail("the scheduler never heard of the shareblock backend")

    def target(self):
        port = 3260 if self.PROTOCOL == "iscsi" else 4420
        return local_target(self.PROTOCOL, [Portal("127.0.0.1", port)])

    def attach_host(self, vol_id, host):
        """An attachment for a lab host identity; returns it with its connection info."""
        body = {"attachment": {"volume_uuid": vol_id, "instance_uuid": str(uuid.uuid4()),
                               "mode": "rw", "connector": host.connector()}}
        att = self.api.api_post("/attachments", body)["attachment"]
        self.api.api_post(f"/attachments/{att['id']}/action", {"os-complete": None},
                          check_response_status=[204])
        info = att["connection_info"]  # Cinder's attachment API flattens data to the top
        att["connection_info"] = {"driver_volume_type": info["driver_volume_type"],
                                  "data": {k: v for k, v in info.items()
                                           if k != "driver_volume_type"}}
        return att

    def restart_volume_service_elsewhere(self):
        """The volume service stops, and starts as on another node: its state
        directory empty. The storage node also lost its desired state and its
        configfs objects, so Cinder's start-up ensure_export must rebuild every
        export from Cinder's database (the attachments) and cinder.conf (the key)."""
        import shutil
        self.volume.stop()
        self.volume.wait()
        self._services.remove(self.volume)
        for folder in ("state", "node"):
            shutil.rmtree(os.path.join(self.workdir, folder), ignore_errors=True)
        kernel = self.target()
        for vid in list(kernel.actual()):
            kernel.unexport(vid)
        self.volume = self.start_service("volume")
        self.wait_for_backend()

    # --- the API as Nova drives it ------------------------------------------------
    def create_type(self, name, multiattach):
        body = {"name": name}
        if multiattach:
            body["extra_specs"] = {"multiattach": "<is> True"}
        return self.api.api_post("/types", {"volume_type": body})["volume_type"]

    def create_volume(self, vtype, size=1):
        vol = self.api.post_volume({"volume": {"size": size, "volume_type": vtype,
                                               "name": "v-" + uuid.uuid4().hex[:6]}})
        return self._poll_volume_while(vol["id"], ["creating"], max_retries=600)

    def connector(self, n):
        if self.PROTOCOL == "iscsi":
            initiator = system_initiator() if n == 1 else f"iqn.2026-11.io.test:cinder-h{n}"
            return {"initiator": initiator, "host": f"h{n}", "ip": "127.0.0.1",
                    "platform": "x86_64", "os_type": "linux", "multipath": False}
        nqn = (system_hostnqn() if n == 1 else
               f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, str(n))}")
        return {"nqn": nqn, "host": f"h{n}", "ip": "127.0.0.1", "platform": "x86_64",
                "os_type": "linux", "multipath": False}

    def attach(self, vol_id, n):
        body = {"attachment": {"volume_uuid": vol_id, "instance_uuid": str(uuid.uuid4()),
                               "mode": "rw", "connector": self.connector(n)}}
        att = self.api.api_post("/attachments", body)["attachment"]
        self.api.api_post(f"/attachments/{att['id']}/action", {"os-complete": None},
                          check_response_status=[204])
        return att

    def attach_two_step(self, vol_id, n, mode):
        """Reserve with a mode, then connect (PUT with the connector), then complete:
        Cinder then stores the attachment's mode in its connector."""
        body = {"attachment": {"volume_uuid": vol_id, "instance_uuid": str(uuid.uuid4()),
                               "mode": mode}}
        att = self.api.api_post("/attachments", body)["attachment"]
        self.api.api_put(f"/attachments/{att['id']}",
                         {"attachment": {"connector": self.connector(n)}})
        self.api.api_post(f"/attachments/{att['id']}/action", {"os-complete": None},
                          check_response_status=[204])
        return att

    def modes_on_target(self, vol_id):
        seen = self.target().actual(vol_id).get(vol_id)
        return {h: s.mode for h, s in seen.hosts.items()} if seen else {}

    def detach(self, att_id):
        # Nova deletes with its service token; with noauth this header says the same
        return self.api.api_delete(f"/attachments/{att_id}",
                                   headers={"X-Service-Roles": "service"})

    def host_side(self):
        """`shareblock --control cinder` as a host runs it, against this Cinder."""
        from pathlib import Path

        from shareblock.host import attach
        from shareblock.host.control import CinderControl
        self.patch("shareblock.host.attach.STATE", Path(self.workdir) / "host-attachments.json")
        env = {"OS_AUTH_TYPE": "noauth", "OS_USER_ID": "admin",
               "OS_PROJECT_ID": self.api.project_id, "OS_ENDPOINT": self.auth_url}
        return CinderControl(env), attach

    def retype(self, vol_id, new_type):
        return self.api.api_post(f"/volumes/{vol_id}/action",
                                 {"os-retype": {"new_type": new_type,
                                                "migration_policy": "never"}})


def os_brick_connector(protocol):
    from os_brick import privileged
    from os_brick.initiator import connector as brick
    privileged.default.set_client_mode(False)  # root in the lab: no privsep daemon
    return brick.InitiatorConnector.factory("ISCSI" if protocol == "iscsi" else "NVME", None,
                                            use_multipath=False)


class _MultiattachScenario:
    """Mixed into one test class per transport."""

    def test_two_hosts_then_detach_then_retype(self):
        self.create_type("multiattach", True)
        self.create_type("plain", False)
        vol = self.create_volume("multiattach")
        self.assertEqual("available", vol["status"])
        self.assertTrue(vol["multiattach"])

        # Host 1 is this kernel's own identity, attached by shareblock's host side
        # through Cinder's attachment API (python-cinderclient) and os-brick.
        control, connected = self.host_side()
        rec = connected.connect(control, vol["id"])
        a2 = self.attach(vol["id"], 2)
        vol = self.api.get_volume(vol["id"])
        self.assertEqual("in-use", vol["status"])
        self.assertEqual(2, len(vol["attachments"]))
        a1 = self.api.api_get(f"/attachments/{rec['attachment_id']}")["attachment"]
        self.assertEqual("attached", a1["status"], "the host side completed it")
        host1, host2 = (self.connector(n)["initiator" if self.PROTOCOL == "iscsi" else "nqn"]
                        for n in (1, 2))
        seen = self.target().actual(vol["id"])[vol["id"]]
        self.assertEqual({host1, host2}, set(seen.hosts), "both hosts admitted on the target")
        with open(rec["device"], "rb") as f:
            self.assertEqual(4096, len(f.read(4096)))

        exc = self.assertRaises(client.OpenStackApiException400, self.retype, vol["id"],
                                "plain")
        self.assertIn("only allowed on available volumes", exc.response.text)

        connected.disconnect(control, vol["id"])  # deletes a1 through Cinder's API
        seen = self.target().actual(vol["id"])[vol["id"]]
        self.assertEqual({host2}, set(seen.hosts), "the other host is still admitted")
        vol = self.api.get_volume(vol["id"])
        self.assertEqual(["in-use", 1], [vol["status"], len(vol["attachments"])])

        self.detach(a2["id"])
        vol = self.api.get_volume(vol["id"])
        self.assertEqual("available", vol["status"])
        self.assertNotIn(vol["id"], self.target().actual(), "last detach removed the export")

        self.retype(vol["id"], "plain")
        vol = self._poll_volume_while(vol["id"], ["retyping"], max_retries=600)
        self.assertEqual(["available", "plain", False],
                         [vol["status"], vol["volume_type"], vol["multiattach"]])
        self.api.delete_volume(vol["id"])
        self.one_host_rw_and_ro_attachments_each_detached_in_turn()


    def one_host_rw_and_ro_attachments_each_detached_in_turn(self):
        """Two instances on one hypervisor: a rw and a ro attachment of the same host.
        Cinder passes terminate_connection no attachment, but the connector it
        stored (with the attachment's mode): detaching the ro one leaves the host
        rw; detaching the rw one while a ro one stays lowers it to ro. (Run inside
        another test: each test starts Cinder's services anew, minutes under
        emulation.)"""
        vol = self.create_volume("multiattach")
        host = self.connector(2)["initiator" if self.PROTOCOL == "iscsi" else "nqn"]
        rw = self.attach_two_step(vol["id"], 2, "rw")
        ro = self.attach_two_step(vol["id"], 2, "ro")
        self.assertEqual({host: "rw"}, self.modes_on_target(vol["id"]))
        self.detach(ro["id"])
        self.assertEqual({host: "rw"}, self.modes_on_target(vol["id"]), "VM 1 keeps write")
        ro = self.attach_two_step(vol["id"], 2, "ro")
        self.detach(rw["id"])
        self.assertEqual({host: "ro"}, self.modes_on_target(vol["id"]), "only ro is left")
        self.detach(ro["id"])
        self.assertEqual({}, self.modes_on_target(vol["id"]))
        self.assertEqual("available", self.api.get_volume(vol["id"])["status"])
        self.api.delete_volume(vol["id"])

    def test_failover_keeps_every_hosts_secrets(self):
        """Hosts attached before the volume service moved log in again with the
        connection info they already hold, and a new attach works."""
        from shareblock.lab.hosts import Host
        self.create_type("multiattach", True)
        vol = self.create_volume("multiattach")
        tag = uuid.uuid4().hex[:6]
        a, b = Host(self.PROTOCOL, f"cfo-a-{tag}"), Host(self.PROTOCOL, f"cfo-b-{tag}")
        try:
            att_a = self.attach_host(vol["id"], a)
            info_a = att_a["connection_info"]
            a.attach(info_a)
            data = os.urandom(1 << 20)
            a.write(data)
            a.disconnect()
            self.restart_volume_service_elsewhere()
            self.assertEqual("in-use", self.api.get_volume(vol["id"])["status"])
            seen = self.target().actual(vol["id"])[vol["id"]]
            self.assertEqual({a.id: "rw"}, {h: s.mode for h, s in seen.hosts.items()},
                             "ensure_export brought the host back from Cinder's attachments")
            a.attach(info_a)  # the connection info Nova already held
            self.assertEqual(data, a.read(1 << 20))
            att_b = self.attach_host(vol["id"], b)  # a new attach works
            b.attach(att_b["connection_info"])
            self.assertEqual(data, b.read(1 << 20))
            b.disconnect()
            a.disconnect()
            self.detach(att_b["id"])
            self.detach(att_a["id"])
        finally:
            a.cleanup()
            b.cleanup()
        self.assertNotIn(vol["id"], self.target().actual())
        self.api.delete_volume(vol["id"])
        self.snapshot_of_a_volume_two_hosts_write()
        self.live_migration_through_the_attachment_api()

    # (the two below run inside another test: each test starts Cinder's services anew)
    def wait_snapshot(self, snap_id, gone=False):
        import time
        for _ in range(600):
            try:
                snap = self.api.api_get(f"/snapshots/{snap_id}")["snapshot"]
            except client.OpenStackApiException404:
                if gone:
                    return None
                raise
            if snap["status"] not in ("creating", "deleting"):
                return snap
            time.sleep(1)
        self.fail(f"snapshot {snap_id} stayed {snap['status']}")

    def snapshot_of_a_volume_two_hosts_write(self):
        """A snapshot of a multiattach volume attached to two writing hosts, nobody
        detached; a volume made from it holds what they had written."""
        from shareblock.lab.hosts import Host
        vol = self.create_volume("multiattach")
        tag = uuid.uuid4().hex[:6]
        a, b = Host(self.PROTOCOL, f"csn-a-{tag}"), Host(self.PROTOCOL, f"csn-b-{tag}")
        before_a, before_b, after = (os.urandom(1 << 20) for _ in range(3))
        try:
            att_a, att_b = self.attach_host(vol["id"], a), self.attach_host(vol["id"], b)
            a.attach(att_a["connection_info"])
            b.attach(att_b["connection_info"])
            a.write(before_a)
            b.write(before_b, 2)
            snap = self.api.api_post("/snapshots", {"snapshot": {
                "volume_id": vol["id"], "name": "two-writers", "force": True}})["snapshot"]
            snap = self.wait_snapshot(snap["id"])
            self.assertEqual(["available", 1], [snap["status"], snap["size"]])
            self.assertEqual({a.id: "rw", b.id: "rw"}, self.modes_on_target(vol["id"]),
                             "nobody was detached")
            b.write(after, 0)
            self.assertEqual(after, a.read(1 << 20))
            made = self.api.post_volume({"volume": {"snapshot_id": snap["id"], "size": 2}})
            made = self._poll_volume_while(made["id"], ["creating"], max_retries=600)
            self.assertEqual(["available", 2, True],
                             [made["status"], made["size"], made["multiattach"]])
            with open(os.path.join(self.workdir, "volumes", f"{made['id']}.img"), "rb") as f:
                self.assertEqual(before_a, f.read(1 << 20))
                f.seek(2 << 20)
                self.assertEqual(before_b, f.read(1 << 20))
            exc = self.assertRaises(client.OpenStackApiException400, self.api.delete_volume,
                                    vol["id"])
            self.assertIn("snapshot", exc.response.text)
            for host, att in ((a, att_a), (b, att_b)):
                host.disconnect()
                self.detach(att["id"])
            self.api.delete_volume(made["id"])
            self.api.api_delete(f"/snapshots/{snap['id']}")
            self.wait_snapshot(snap["id"], gone=True)
        finally:
            a.cleanup()
            b.cleanup()
        self.api.delete_volume(vol["id"])

    def live_migration_through_the_attachment_api(self):
        """Nova's live migration: the same server attaches the (single-attach,
        in-use) volume on the destination host, another server is refused, the
        source's attachment is deleted, and the destination reads and writes on.

        One kernel plays both hosts, and one end connects with os-brick as this
        kernel's own identity, the other with an identity of the lab's. For NVMe,
        each host has a subsystem of its own, so os-brick connects the
        destination. For iSCSI both hosts log in to the same target, and os-brick
        takes any session to that target and portal for its own whatever its
        initiator (and logs them all out): there, os-brick connects the source,
        whose session the target ends when its attachment is deleted."""
        from shareblock.lab.hosts import Host
        from shareblock.lab.initiators import read_back, write_pattern
        self.create_type("plain", False)
        vol = self.create_volume("plain")
        server = str(uuid.uuid4())
        lab = Host(self.PROTOCOL, f"clm-{uuid.uuid4().hex[:6]}")
        brick_first = self.PROTOCOL == "iscsi"  # os-brick's end: the source
        ends = {}
        try:
            for end in ("source", "destination"):
                by_brick = (end == "source") == brick_first
                connector = self.connector(1) if by_brick else lab.connector()
                att = self.api.api_post("/attachments", {"attachment": {
                    "volume_uuid": vol["id"], "instance_uuid": server, "mode": "rw",
                    "connector": connector}})["attachment"]
                flat = att["connection_info"]
                info = {"driver_volume_type": flat["driver_volume_type"],
                        "data": {k: v for k, v in flat.items() if k != "driver_volume_type"}}
                if by_brick:
                    path, release = self.brick_connect(info)
                else:
                    lab.attach(info)
                    path, release = str(lab.device()), lab.disconnect
                self.api.api_post(f"/attachments/{att['id']}/action", {"os-complete": None},
                                  check_response_status=[204])
                ends[end] = {"att": att, "path": path, "release": release,
                             "host": connector["initiator" if self.PROTOCOL == "iscsi"
                                               else "nqn"]}
                if end == "source":
                    data = os.urandom(1 << 20)
                    write_pattern(path, data)
                    exc = self.assertRaises(
                        client.OpenStackApiException400, self.api.api_post, "/attachments",
                        {"attachment": {"volume_uuid": vol["id"],
                                        "instance_uuid": str(uuid.uuid4()),
                                        "connector": self.connector(2)}})
                    self.assertIn("status must be", exc.response.text)
            self.assertEqual("in-use", self.api.get_volume(vol["id"])["status"])
            self.assertEqual({ends["source"]["host"]: "rw", ends["destination"]["host"]: "rw"},
                             self.modes_on_target(vol["id"]), "both hosts admitted")
            dst = ends["destination"]["path"]
            self.assertEqual(data, read_back(dst, 1 << 20))

            source = ends.pop("source")
            if not brick_first:
                source["release"]()
            self.detach(source["att"]["id"])  # the target ends the source's session
            if brick_first:
                source["release"]()
            self.assertEqual({ends["destination"]["host"]: "rw"},
                             self.modes_on_target(vol["id"]), "the source is revoked")
            self.assertEqual("in-use", self.api.get_volume(vol["id"])["status"])
            more = os.urandom(1 << 20)
            write_pattern(dst, more, 1)
            self.assertEqual(more, read_back(dst, 1 << 20, 1))
            self.assertEqual(data, read_back(dst, 1 << 20))
            destination = ends.pop("destination")
            destination["release"]()
            self.detach(destination["att"]["id"])
        finally:
            for end in ends.values():
                end["release"]()
            lab.cleanup()
        self.assertEqual("available", self.api.get_volume(vol["id"])["status"])
        self.api.delete_volume(vol["id"])

    def brick_connect(self, info):
        """Connect as this kernel's own identity with os-brick; returns the device
        and how to let it go."""
        from shareblock.host import brick
        conn = brick.connector_for(info)
        if info["driver_volume_type"] == "nvmeof":
            brick.nvme_keys(self.connector(1)["nqn"], info["data"])
        device_info = conn.connect_volume(info["data"])

        def release():
            if info["driver_volume_type"] == "iscsi":  # its own node record only
                import subprocess
                node = ["iscsiadm", "-m", "node", "-T", info["data"]["target_iqn"], "-p",
                        info["data"]["target_portal"], "-I", "default"]
                subprocess.run([*node, "--logout"], capture_output=True)
                subprocess.run([*node, "--op", "delete"], capture_output=True)
            else:
                conn.disconnect_volume(info["data"], device_info, force=True,
                                       ignore_errors=True)
        return device_info["path"], release


class ISCSIMultiattachTest(_MultiattachScenario, _ShareBlockCinder):
    PROTOCOL = "iscsi"


class NVMeMultiattachTest(_MultiattachScenario, _ShareBlockCinder):
    PROTOCOL = "nvmet_tcp"


class NoMultiattachCapabilityTest(_ShareBlockCinder):
    MULTIATTACH = False

    def test_multiattach_volume_fails_scheduling(self):
        self.create_type("multiattach", True)
        self.create_type("plain", False)
        vol = self.create_volume("multiattach")
        self.assertEqual("error", vol["status"])
        self.assertIsNone(vol["os-vol-host-attr:host"])
        events = [m["event_id"] for m in self.api.api_get("/messages")["messages"]]
        self.assertIn("VOLUME_VOLUME_001_003", events)  # no valid backend
        self.assertEqual("available", self.create_volume("plain")["status"])
