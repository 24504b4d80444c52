"""Target reboot: configfs emptied, target modules unloaded, dm views and loop
devices gone; every export, ACL, mode and credential comes back, hosts log in
again with the connection info they already hold, data is intact.

Restored three ways: by the boot-time command alone (`shareblock-restore.service`'s
ExecStart, no control plane), by `reconcile` (the control plane), and by the
driver's `ensure_export` per volume (what Cinder calls when its volume service
starts).
"""
import hashlib
import os
import subprocess
import time
from pathlib import Path


from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.lab.hosts import Host
from shareblock.targets.lio import TPG_ATTRIBUTES
from tests.hardware.boot import boot_restore
from tests import crashlib
from tests.hardware.reliability.conftest import MODE

MB = 1 << 20
PROTOCOLS = ("iscsi", "nvmet_tcp")
NVMET = Path("/sys/kernel/config/nvmet")
# Unloaded in this order (users first), the ones loaded; the boot-time restore
# loads back what its documents need.
UNLOAD = ["nvmet_tcp", "nvme_loop", "nvmet", "iscsi_target_mod", "tcm_loop",
          "target_core_iblock", "target_core_file", "target_core_pscsi", "target_core_user",
          "target_core_mod"]
NEEDED = ["target_core_mod", "target_core_iblock", "iscsi_target_mod", "nvmet", "nvmet_tcp"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(drv) -> dict:
    """What the target holds for our volumes, secrets included, read from configfs
    (device paths left out: loop devices may come back under other numbers)."""
    t = drv.target
    out = {"hosts": {vid: {h: s.mode for h, s in e.hosts.items()}
                     for vid, e in t.actual().items()}}
    if drv.protocol == "iscsi":
        for vid, hosts in out["hosts"].items():
            tpg = t.tpg(vid)
            out[f"{vid} enable"] = tpg.read("enable")
            out[f"{vid} portals"] = (tpg / "np").children()
            for attr in TPG_ATTRIBUTES:
                out[f"{vid} {attr}"] = tpg.read(f"attrib/{attr}")
            for host in hosts:
                acl = tpg / "acls" / host
                for f in ("auth/userid", "auth/password", "auth/userid_mutual",
                          "auth/password_mutual", "lun_0/write_protect"):
                    out[f"{vid} {host} {f}"] = acl.read(f)
        return out
    root = t.root
    for nqn in (root / "subsystems").children():
        if not nqn.startswith(t.prefix + ":"):
            continue
        sub = root / "subsystems" / nqn
        ns = sub / "namespaces" / "1"
        out[nqn] = {"allow_any_host": sub.read("attr_allow_any_host"),
                    "ns": [ns.read(f) for f in ("enable", "device_uuid", "device_nguid")],
                    "hosts": sorted((sub / "allowed_hosts").links()),
                    "ports": sorted(p for p in (root / "ports").children()
                                    if nqn in (root / "ports" / p / "subsystems").links())}
        for host in out[nqn]["hosts"]:
            out[f"host {host}"] = [(root / "hosts" / host).read(f) for f in (
                "dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup")]
    return out


def wipe_configfs() -> None:
    """Everything LIO and nvmet hold, gone, as after a reboot."""
    from rtslib_fb import RTSRoot
    RTSRoot().clear_existing(confirm=True)
    for port in (NVMET / "ports").iterdir():
        for link in (port / "subsystems").iterdir():
            link.unlink()
        port.rmdir()
    for sub in (NVMET / "subsystems").iterdir():
        for link in (sub / "allowed_hosts").iterdir():
            link.unlink()
        for ns in (sub / "namespaces").iterdir():
            (ns / "enable").write_text("0")
            ns.rmdir()
        sub.rmdir()
    for host in (NVMET / "hosts").iterdir():
        host.rmdir()


def loaded_modules() -> set[str]:
    return {line.split()[0] for line in Path("/proc/modules").read_text().splitlines()}


def unload_modules() -> str:
    """Unload the target modules, as a reboot would; returns what happened."""
    loaded = loaded_modules()
    try:  # the fabric's own configfs group holds iscsi_target_mod (rtslib remakes it)
        Path("/sys/kernel/config/target/iscsi").rmdir()
    except OSError:
        pass
    failed = []
    for module in UNLOAD:
        if module in loaded:
            res = subprocess.run(["modprobe", "-r", module], capture_output=True, text=True)
            if res.returncode != 0:
                failed.append(f"{module}: {res.stderr.strip()}")
    return "unloaded" if not failed else "not all unloaded: " + "; ".join(failed)


def drop_devices(pool_dirs: list[Path]) -> None:
    """The dm views and loop devices a reboot takes with it."""
    out = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("sb-"):
            subprocess.run(["dmsetup", "remove", "--retry", line.split()[0]], check=True)
    for folder in pool_dirs:
        for img in folder.glob("*.img"):
            for loop in subprocess.run(["losetup", "-j", str(img), "-n", "-O", "NAME"],
                                       capture_output=True, text=True).stdout.split():
                subprocess.run(["losetup", "-d", loop], check=True)


def pool_write(cp, vid: str, data: bytes) -> None:
    drv = cp.driver(cp.show(vid)["os-vol-host-attr:host"])
    fd = os.open(drv.pool.device(vid), os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def pool_read(cp, vid: str) -> bytes:
    with open(cp.driver(cp.show(vid)["os-vol-host-attr:host"]).pool.device(vid), "rb") as f:
        return f.read(4 * MB)


def test_reboot_restores_exports_acls_modes_credentials_and_data(tmp_path, unique, report,
                                                                  capsys):
    path = crashlib.lab_conf(tmp_path, unique)

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    cp = plane()
    started = time.monotonic()
    hosts, checks, known = [], [], set()
    # Real logins cost many seconds under emulation: quick mode logs in on one
    # transport (alternating by day) and checks the other on configfs and the pool.
    logins = PROTOCOLS if MODE == "full" else [PROTOCOLS[int(time.strftime("%j")) % 2]]
    try:
        for p in PROTOCOLS:
            t = crashlib.make_types(cp, p)
            v1, v2 = (cp.create(1, t["ma"])["id"] for _ in range(2))
            known |= {v1, v2}
            a, b, c = (Host(p, f"rb-{x}-{unique}") for x in "abc")
            hosts += [a, b, c]
            atts = {}
            for host, vid, mode in ((a, v1, "rw"), (b, v1, "ro"), (c, v2, "rw")):
                att = cp.attachment_create(vid, host.connector(), mode=mode)
                cp.attachment_complete(att["id"])
                atts[host.id] = att["id"]
            data1, data2 = os.urandom(4 * MB), os.urandom(4 * MB)
            if p in logins:
                a.attach(cp.attachment_show(atts[a.id])["connection_info"])
                a.write(data1)
                a.disconnect()
            else:
                pool_write(cp, v1, data1)
            pool_write(cp, v2, data2)
            checks.append((p, v1, v2, atts, a, b, c, sha(data1), sha(data2)))

        before = {name: snapshot(cp.driver(name)) for name in cp.conf.enabled_backends}
        pools = [tmp_path / "lio-volumes", tmp_path / "nvme-volumes"]
        wipe_configfs()
        drop_devices(pools)
        reloaded = unload_modules()
        # the boot-time command alone: it loads the modules too
        booted = boot_restore(tmp_path / "state" / "node")
        assert booted.returncode == 0, booted.stderr
        assert set(NEEDED) <= loaded_modules(), "the restore loaded the target modules"
        cp = plane()
        assert "restored 4 exports, 6 host ACLs" in booted.stdout, booted.stdout
        after = {name: snapshot(cp.driver(name)) for name in cp.conf.enabled_backends}
        assert after == before, "every export, ACL, mode and secret is back"
        assert crashlib.violations(cp, known) == []
        assert boot_restore(tmp_path / "state" / "node").returncode == 0, "idempotent"
        done = cp.reconcile()
        assert done["admitted"] == [] and done["revoked"] == [], "nothing left to repair"

        lost = 0
        for p, v1, v2, atts, a, b, c, sum1, sum2 in checks:
            if p not in logins:  # configfs was compared above; the data, on the pool
                lost += sha(pool_read(cp, v1)) != sum1
                lost += sha(pool_read(cp, v2)) != sum2
                continue
            a.attach(cp.attachment_show(atts[a.id])["connection_info"])  # the info it had
            lost += sha(a.read(4 * MB)) != sum1
            a.write(os.urandom(MB), offset_mb=8)  # and a still writes
            if MODE == "full":  # quick mode checks b and c on configfs and the pool
                b.attach(cp.attachment_show(atts[b.id])["connection_info"])
                lost += sha(b.read(4 * MB)) != sum1
                assert b.write_fails_at_target(os.urandom(MB), offset_mb=8), "b is still ro"
                c.attach(cp.attachment_show(atts[c.id])["connection_info"])
                lost += sha(c.read(4 * MB)) != sum2
                c.disconnect()
            else:
                lost += sha(pool_read(cp, v2)) != sum2
            for host in (a, b):
                host.disconnect()

        # and the control plane's own path, from an emptied configfs again
        wipe_configfs()
        drop_devices(pools)
        cp = plane()
        done = cp.reconcile()
        assert len(done["admitted"]) == 6, done
        assert crashlib.violations(cp, known) == []
        assert {n: snapshot(cp.driver(n)) for n in cp.conf.enabled_backends} == before

        # The Cinder path: the volume service starts and calls ensure_export per volume.
        wipe_configfs()
        drop_devices(pools)
        cp = plane()
        for vol in cp.volume_list():
            cp.driver(vol["os-vol-host-attr:host"]).ensure_export(None, cp.driver_volume(
                vol["id"]))
        assert {n: snapshot(cp.driver(n)) for n in cp.conf.enabled_backends} == before
        assert crashlib.violations(cp, known) == []
    finally:
        for host in hosts:
            host.cleanup()
    crashlib.clean_up(plane())
    with capsys.disabled():
        print(f"\n[reboot] modules {reloaded}; {len(known)} volumes, "
              f"6 ACLs restored three times; lost {lost}; {time.monotonic() - started:.0f} s")
    report(tried=len(known), survived=len(known) - lost, lost=lost, unit="volumes",
           acls=6, logins=logins, modules=reloaded,
           restores=["shareblock-restore", "reconcile", "ensure_export"])
    assert lost == 0
