"""The benchmark's scenarios. Each returns plain data (lists of seconds) for report.py.

All tools act on the same kernel in the same run, side by side: the existing
exports are built once with the floor's writes, and every tool admits and
revokes its hosts on top of them.
"""
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from statistics import median

from prometheus_client import generate_latest

from shareblock.bench import floor, loops, peers
from shareblock.control import config as config_mod
from shareblock.control.api import ControlPlane
from shareblock.exporter.main import registry_for
from shareblock.lab import config as lab_config
from shareblock.targets import credentials
from shareblock.targets import restore as boot
from shareblock.targets.desired import DesiredStore
from shareblock.targets.base import Desired, HostAccess, Portal
from shareblock.targets.lio import LioTarget
from shareblock.targets.nvmet import NvmetTarget
from shareblock.terminal.progress import Progress

ISCSI_PORTAL = Portal("127.0.0.1", 3260)
NVME_PORTAL = Portal("127.0.0.1", 4420)
SCRATCH = Path("/tmp/shareblock-bench")  # guest tmpfs: backing files and state


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def iqn(tag: str) -> str:
    return f"iqn.2026-11.io.bench.host:{tag}"


def nqn(tag: str) -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, tag)}"


# filler volumes per transport: their volume type's protocol, connector key, host id
FILLER_KINDS = {"lio": ("iSCSI", "initiator", iqn), "nvmet": ("NVMe-oF", "nqn", nqn)}


def make_fillers(cp: ControlPlane, tag: str, transport: str, first: int, total: int) -> None:
    """Volumes <tag>-<transport>-<i> for first <= i < total, each exported with one
    host (<tag>-<i>), made through the control plane."""
    proto, key, make = FILLER_KINDS[transport]
    with Progress(f"{tag}: {transport} volumes") as shown:
        for i in range(first, total):
            vol = cp.create(1, f"ma-{proto}", name=f"{tag}-{transport}-{i}")
            if vol["status"] != "available":
                raise RuntimeError(f"filler volume: {vol}")
            cp.attachment_create(vol["id"], {key: make(f"{tag}-{i}"), "host": f"{tag}-{i}"})
            shown(i + 1 - first, total - first)


class Lab:
    """What the scenarios share: backing devices, targets, a control plane."""

    def __init__(self):
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.backing = loops.sparse_file(SCRATCH / "filler.img", 64)
        self.lio_loops: list[str] = []
        self.nvme_loop = loops.attach(self.backing)
        self.lio = LioTarget([ISCSI_PORTAL])
        self.nvmet = NvmetTarget([NVME_PORTAL])
        self.port = self.nvmet.port(NVME_PORTAL).name
        floor.nvmet_port(self.port, NVME_PORTAL.address, NVME_PORTAL.port)
        self.fillers = {"lio": 0, "nvmet": 0}
        self.cp = None

    def loop(self, i: int) -> str:
        while len(self.lio_loops) <= i:
            self.lio_loops.append(loops.attach(self.backing))
        return self.lio_loops[i]

    # --- existing exports: volumes of the control plane, one attached host each -----
    def grow(self, total: int) -> None:
        """Bring each transport to `total` filler volumes in the control plane, each
        exported with one host: what a full-path admit could be slowed by (rows,
        node documents, configfs exports) grows with them alike."""
        if self.cp is None:
            self.cp = self.admit_control_plane()
        for transport in FILLER_KINDS:
            started = time.perf_counter()
            make_fillers(self.cp, "fill", transport, self.fillers[transport], total)
            if total > self.fillers[transport]:
                log(f"{transport}: {total - self.fillers[transport]} filler volumes made "
                    f"in {time.perf_counter() - started:.0f} s")
            self.fillers[transport] = max(total, self.fillers[transport])

    def admit_control_plane(self) -> ControlPlane:
        # thousands of 1 GiB sparse volumes, never written, on the guest's small
        # tmpfs: over-subscription far beyond a production pool's
        return self.control_plane("admit", max_over_subscription_ratio=100_000)

    @staticmethod
    def conf_path(tag: str) -> Path:
        return SCRATCH / f"cp-{tag}" / "shareblock.conf"

    def control_plane(self, tag: str, **backend_options) -> ControlPlane:
        """A new control plane (a former one's state of this tag is dropped)."""
        folder = self.conf_path(tag).parent
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        cp = ControlPlane(config_mod.load(str(lab_config.write(folder, **backend_options))))
        for proto in ("iSCSI", "NVMe-oF"):
            cp.type_create(f"ma-{proto}")
            cp.type_key(f"ma-{proto}", "set", {"multiattach": "<is> True",
                                               "storage_protocol": proto})
        return cp


# --- tools: admit(host) and revoke(host) on one volume each ---------------------------
class Tool:
    """slow: a process per operation (measured with fewer samples); hosts_cap: the
    largest hosts-per-volume count worth its time (None: skip that scenario)."""

    def __init__(self, name, admit, revoke, slow=False, hosts_cap=64, cleanup=None):
        self.name, self.admit, self.revoke, self.slow = name, admit, revoke, slow
        self.hosts_cap = None if slow else hosts_cap
        self.cleanup = cleanup or revoke  # an untimed revoke where revoke is not measured


def lio_tools(lab: Lab, with_peers: bool = True) -> list[Tool]:
    vol = "bench-lio"
    lab.lio.export(vol, loops.attach(loops.sparse_file(SCRATCH / "lio-vol.img", 64)))
    target_iqn = lab.lio.target_iqn(vol)
    tpg = lab.lio.tpg(vol).path.as_posix()
    creds = credentials.random_chap("bench")
    cp, volume, _ = full_path_volume(lab, "iSCSI")
    atts = {}

    def full_admit(host):
        atts[host] = cp.attachment_create(volume, {"initiator": host, "host": host[-16:]})["id"]

    tools = [
        Tool("floor", lambda h: floor.lio_admit(tpg, h, creds.user, creds.secret),
             lambda h: floor.lio_revoke(tpg, h)),
        Tool("shareblock", lambda h: lab.lio.admit(vol, h, "rw", creds),
             lambda h: lab.lio.revoke(vol, h)),
        Tool("shareblock full path", full_admit, lambda h: cp.attachment_delete(atts.pop(h)),
             hosts_cap=16),
        Tool("rtslib-fb", lambda h: peers.Rtslib().admit(target_iqn, h, creds.user, creds.secret),
             lambda h: peers.Rtslib().revoke(target_iqn, h)),
    ]
    if with_peers:
        tcli, rts = peers.Targetcli(), peers.Rtstool()
        tools += [
            Tool("targetcli", lambda h: tcli.admit(target_iqn, h, creds.user, creds.secret),
                 lambda h: tcli.revoke(target_iqn, h), slow=True,
                 cleanup=lambda h: lio_drop(tpg, h)),
            Tool("cinder-rtstool", lambda h: rts.admit(target_iqn, h, creds.user, creds.secret),
                 lambda h: rts.revoke(target_iqn, h), slow=True,
                 cleanup=lambda h: lio_drop(tpg, h)),
        ]
    return tools


def lio_drop(tpg: str, host: str) -> None:
    """Remove whatever a peer made of `host`'s ACL, also when it was stopped half way."""
    acl = Path(tpg) / "acls" / host
    if not acl.is_dir():
        return
    for lun in acl.glob("lun_*"):
        for link in lun.iterdir():
            if link.is_symlink():
                link.unlink()
        lun.rmdir()
    acl.rmdir()


def nvmet_tools(lab: Lab) -> list[Tool]:
    vol = "bench-nvme"
    device = loops.attach(loops.sparse_file(SCRATCH / "nvme-vol.img", 64))
    lab.nvmet.export(vol, device)
    keys = credentials.random_dhchap()
    cp, volume, _ = full_path_volume(lab, "NVMe-oF")
    atts = {}

    def floor_nqn(host):
        return f"{lab.nvmet.volume_nqn(vol)}:floor-{uuid.uuid5(uuid.NAMESPACE_DNS, host).hex[:8]}"

    def dm_name(host):
        return f"bench-{uuid.uuid5(uuid.NAMESPACE_DNS, host).hex[:12]}"

    def floor_admit(host, dm=False):
        dev = device
        if dm:  # the same per-host view shareblock makes, with its ioctls alone
            dev = floor.dm_view(dm_name(host), device)
        floor.nvmet_admit(floor_nqn(host), host, dev, lab.port, keys=keys)

    def floor_revoke(host, dm=False):
        floor.nvmet_revoke(floor_nqn(host), host, lab.port)
        if dm:
            floor.dm_view_remove(dm_name(host))

    def full_admit(host):
        atts[host] = cp.attachment_create(volume, {"nqn": host, "host": host[-16:]})["id"]

    return [
        Tool("floor", floor_admit, floor_revoke),
        Tool("floor + dm view", lambda h: floor_admit(h, True), lambda h: floor_revoke(h, True),
             hosts_cap=None),
        Tool("shareblock", lambda h: lab.nvmet.admit(vol, h, "rw", keys),
             lambda h: lab.nvmet.revoke(vol, h), hosts_cap=64),
        Tool("shareblock full path", full_admit, lambda h: cp.attachment_delete(atts.pop(h)),
             hosts_cap=None),
    ]


def full_path_volume(lab: Lab, proto: str):
    """A multiattach volume in an embedded control plane, kept exported by a resident
    attachment so that each measured attachment is one more host, not an export."""
    if lab.cp is None:
        lab.cp = lab.admit_control_plane()
    cp = lab.cp
    vol = cp.create(1, f"ma-{proto}", name=f"bench-{proto.lower()}")
    if vol["status"] != "available":
        raise RuntimeError(f"control plane volume: {vol}")
    key, host = (("initiator", iqn("resident")) if proto == "iSCSI"
                 else ("nqn", nqn("resident")))
    # ro: with a second writer the guard would probe the volume on every admit (its cost
    # is measured in the guard scenario), which is not what a per-host admit measures.
    resident = cp.attachment_create(vol["id"], {key: host, "host": "resident"}, mode="ro")
    return cp, vol["id"], resident


WARM_UP = 3  # untimed admit+revoke pairs before each in-process tool's samples


def measure(tool: Tool, tag: str, samples: int, budget: float, least: int = 1,
            revoke: bool = True) -> dict:
    """A process-per-operation tool: up to `samples` admit+revoke pairs on fresh hosts,
    stopping once `budget` seconds are spent and `least` samples taken (its commands
    cost seconds), or at the first command stopped at its time limit. No warm-up: every
    command starts cold, as an admin's does."""
    out = {"admit": [], "revoke": []}
    settle(0.2)  # the set-up's udev events (new loop devices, exports) are not the tool's
    spent = 0.0
    for i in range(samples):
        host = tag.format(i=i)
        try:
            a = timed(tool.admit, host)
        except peers.ToolStopped as e:  # a lower bound; nothing more to learn at this size
            log(str(e))
            out["admit"].append(e.limit)
            out["stopped"] = True
            tool.cleanup(host)
            break
        out["admit"].append(a)
        if revoke:
            out["revoke"].append(timed(tool.revoke, host))
        else:
            tool.cleanup(host)
        spent += a + sum(out["revoke"][-1:])
        if spent > budget and i + 1 >= least:
            break
    return out


def measure_together(tools: list[Tool], tags: dict, samples: int, budget: float,
                     least: int) -> dict:
    """measure() for in-process tools, sample by sample in turn (the order rotates):
    each tool's i-th sample is taken within milliseconds of the others', so the
    machine's drift (large under emulation) falls on all of them alike."""
    out = {tool.name: {"admit": [], "revoke": []} for tool in tools}
    for tool in tools:  # warm up (imports, caches) untimed: a long-running service is warm
        for i in range(WARM_UP):
            tool.admit(tags[tool.name].format(i=f"warm{i}"))
            tool.revoke(tags[tool.name].format(i=f"warm{i}"))
    settle(0.2)  # the set-up's udev events (new loop devices, exports) are not the tools'
    spent = 0.0
    for i in range(samples):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            host = tags[tool.name].format(i=i)
            a, r = timed(tool.admit, host), timed(tool.revoke, host)
            out[tool.name]["admit"].append(a)
            out[tool.name]["revoke"].append(r)
            spent += a + r
        if spent > budget and i + 1 >= least:
            break
    return out


def log_figures(transport: str, name: str, n: int, got: dict) -> None:
    rev = f"{median(got['revoke']) * 1e3:9.2f} ms" if got["revoke"] else "not measured"
    log(f"{transport} {name:22s} N={n:5d}: admit {'>' if got.get('stopped') else ''}"
        f"{median(got['admit']) * 1e3:9.2f} ms  revoke {rev} ({len(got['admit'])} samples)")


# --- A: admit and revoke vs existing exports ---------------------------------------------
def admit_scaling(lab: Lab, sizes: list[int], size: dict) -> tuple[dict, dict]:
    results = {"lio": {}, "nvmet": {}}
    per_volume = {}
    tools = {"lio": lio_tools(lab), "nvmet": nvmet_tools(lab)}
    for n in sizes:
        lab.grow(n - 1)  # n exports counting the measured one
        for transport, kit in tools.items():
            make = iqn if transport == "lio" else nqn
            tags, got = {}, {}
            for tool in kit:
                tags[tool.name] = make(
                    f"{tool.name.replace(' ', '-').replace('+', '')}-{n}-{{i}}")
                if tool.slow and n in size["slow_sizes"]:
                    got[tool.name] = measure(tool, tags[tool.name], size["slow"],
                                             size["slow_budget"],
                                             revoke=n <= size["slow_revoke_max"])
            fast = [tool for tool in kit if not tool.slow]
            got |= measure_together(fast, tags, size["fast"], size["fast_budget"],
                                    size["least"])
            for tool in kit:
                if tool.name in got:
                    results[transport].setdefault(tool.name, {})[n] = got[tool.name]
                    log_figures(transport, tool.name, n, got[tool.name])
        if n == sizes[0]:
            per_volume = hosts_scaling(tools, size["hosts"])
    return results, per_volume


# --- B: hosts per volume ------------------------------------------------------------------
def hosts_scaling(tools: dict, counts: list[int]) -> dict:
    """Admit k hosts to one volume, one after another: the k-th admit's cost."""
    out = {}
    for transport, kit in tools.items():
        make = iqn if transport == "lio" else nqn
        for tool in kit:
            if tool.hosts_cap is None:
                continue  # a process (or several) per host: the per-op cost is in A
            for k in [k for k in counts if k <= tool.hosts_cap]:
                hosts = [make(f"{tool.name.replace(' ', '-').replace('+', '')}-k{k}-{i}")
                         for i in range(k)]
                times = [timed(tool.admit, h) for h in hosts]
                for h in hosts:
                    tool.revoke(h)
                out.setdefault(transport, {}).setdefault(tool.name, {})[k] = times
                log(f"{transport} {tool.name:22s} {k:3d} hosts: total {sum(times):7.3f} s, "
                    f"per host {median(times) * 1e3:8.2f} ms")
    return out


# --- C: restore after configfs was emptied ---------------------------------------------
@contextlib.contextmanager
def expedited_rcu():
    """Expedited RCU grace periods while configfs is emptied (set-up, never measured):
    LIO waits for a grace period per removed LUN and mapping, about 0.1 s per export
    under emulation, half that expedited. The kernel's setting is put back after."""
    knob = Path("/sys/kernel/rcu_expedited")
    try:
        before = knob.read_text().strip()
        knob.write_text("1")
    except OSError:
        before = None
    try:
        yield
    finally:
        if before is not None:
            knob.write_text(before)


def dm_clear(prefixes: tuple[str, ...]) -> None:
    """Remove the dm views whose names start with one of prefixes (a reboot's loss)."""
    for entry in os.listdir("/sys/block"):
        if entry.startswith("dm-"):
            name = Path(f"/sys/block/{entry}/dm/name").read_text().strip()
            if name.startswith(prefixes):
                floor.dm_view_remove(name)


def restore(lab: Lab, exports: int, hosts: int) -> dict:
    """Restore after a reboot emptied configfs, `exports` x `hosts`, both transports:
    the floor (the same objects written raw), shareblock's target restore, and the
    boot-time command (shareblock-restore: documents read, devices found, the same
    batch), with rtslib-fb's targetctl for LIO."""
    log(f"restore: nvmet emptied in {timed(floor.nvmet_clear):.1f} s")
    lab.fillers = {"lio": 0, "nvmet": 0}
    lab.cp = None  # its exports are cleared below
    out = {"exports": exports, "hosts": hosts}
    out["lio"] = restore_lio(lab, exports, hosts)
    out["nvmet"] = restore_nvmet(lab, exports, hosts)
    return out


def documents(root: Path, target, desired: list) -> None:
    """The node's documents of these exports, as the agent or driver writes them."""
    shutil.rmtree(root, ignore_errors=True)  # a former run's documents are not these
    store = DesiredStore(root)
    ids = getattr(target, "port_ids", None)
    for want in desired:
        store.save(target.protocol, target.prefix, target.portals, want,
                   [ids[p] for p in target.portals] if ids else None)


def restore_lio(lab: Lab, exports: int, hosts: int) -> dict:
    desired, doc = [], []
    for i in range(exports):
        vid = f"r{i}"
        access = [HostAccess(iqn(f"r{i}-h{j}"), "rw", credentials.random_chap(f"r{i}h{j}"))
                  for j in range(hosts)]
        desired.append(Desired(vid, lab.loop(i), access))
        doc.append({"iqn": lab.lio.target_iqn(vid), "hba": lab.lio.backstore_index(vid),
                    "name": lab.lio.backstore_name(vid), "device": lab.loop(i),
                    "serial": lab.lio.unit_serial(vid),
                    "hosts": [{"host": a.host, "user": a.credentials.user,
                               "secret": a.credentials.secret} for a in access]})
    out = {}
    save = str(SCRATCH / "saveconfig.json")
    root = SCRATCH / "node-lio"
    documents(root, lab.lio, desired)

    def acls() -> int:
        base = Path(floor.LIO) / "iscsi"
        return sum(1 for _ in base.glob("*/tpgt_1/acls/*"))

    def clear():
        # Emptying configfs leaves the kernel and udev work to finish (device closes,
        # change events): let it drain so that it is not billed to the next tool.
        started = time.perf_counter()
        with expedited_rcu():
            floor.lio_clear()
        settle()
        log(f"restore: configfs emptied in {time.perf_counter() - started:.1f} s")

    restore_in_turn(out, [("floor", floor.lio_restore, doc),
                          ("shareblock", lab.lio.restore, desired),
                          ("shareblock-restore", boot.restore, str(root))],
                    clear, acls, exports * hosts)
    log(f"restore: rtslib-fb's configuration written in "
        f"{timed(peers.rtslib_save, doc, save):.1f} s")
    clear()
    try:
        out["targetctl restore"] = timed(peers.targetctl_restore, save)
        check(acls(), exports * hosts, "targetctl restore")
    except peers.ToolStopped as e:  # stopped at its time limit: a lower bound
        log(f"targetctl restore: {e}")
        out["targetctl restore"] = peers.RESTORE_LIMIT
        out["targetctl stopped"] = True
    clear()
    log(f"LIO restore {exports} x {hosts}: " + ", ".join(
        f"{k} {v:.2f} s" for k, v in out.items() if isinstance(v, float)))
    return out


def restore_nvmet(lab: Lab, exports: int, hosts: int) -> dict:
    """nvmet: a subsystem and a dm view per (export, host), with DH-HMAC-CHAP keys."""
    desired = []
    for i in range(exports):
        access = [HostAccess(nqn(f"r{i}-h{j}"), "rw", credentials.random_dhchap())
                  for j in range(hosts)]
        desired.append(Desired(f"r{i}", lab.loop(i), access))
    root = SCRATCH / "node-nvmet"
    documents(root, lab.nvmet, desired)
    out = {}

    def subsystems() -> int:
        return sum(1 for n in os.listdir(f"{floor.NVMET}/subsystems") if ":h-" in n
                   or ":rf-" in n)

    def clear():
        started = time.perf_counter()
        floor.nvmet_clear()
        dm_clear(("sb-r", "rf-"))
        settle()
        log(f"restore: nvmet and dm views emptied in {time.perf_counter() - started:.1f} s")

    def floor_restore():
        for want in desired:
            for j, a in enumerate(want.hosts):
                view = floor.dm_view(f"rf-{want.volume_id}-{j}", want.device)
                floor.nvmet_admit(f"{lab.nvmet.volume_nqn(want.volume_id)}:rf-{j}", a.host,
                                  view, lab.port, keys=a.credentials)

    restore_in_turn(out, [("floor + dm view", floor_restore),
                          ("shareblock", lab.nvmet.restore, desired),
                          ("shareblock-restore", boot.restore, str(root))],
                    clear, subsystems, exports * hosts)
    clear()
    log(f"nvmet restore {exports} x {hosts}: " + ", ".join(
        f"{k} {v:.2f} s" for k, v in out.items() if isinstance(v, float)))
    return out


def restore_in_turn(out: dict, tools: list[tuple], clear, count, want: int) -> None:
    """Each (name, restore, *args) from an emptied target, timed into out[name],
    and what it made counted (`count()` must give `want`)."""
    for name, restore_fn, *args in tools:
        clear()
        out[name] = timed(restore_fn, *args)
        check(count(), want, name)


def check(got: int, want: int, what: str) -> None:
    if got != want:
        raise RuntimeError(f"{what}: {got} ACLs in configfs, expected {want}")


# --- D: data path, one host vs two --------------------------------------------------------
FIO_JOBS = {"seq read": ("read", "1M"), "seq write": ("write", "1M"),
            "rand read": ("randread", "4k"), "rand write": ("randwrite", "4k")}


def fio(devices: list[str], rw: str, bs: str, runtime: int) -> list[float]:
    """MB/s of one fio job per device, run one after another (stonewall) by one fio
    process, so that adjacent runs are seconds apart with no process start between."""
    cmd = ["fio", "--output-format=json", "--thread", "--direct=1", "--ioengine=libaio",
           "--iodepth=16", f"--rw={rw}", f"--bs={bs}", "--size=48M", "--time_based",
           f"--runtime={runtime}"]
    for i, dev in enumerate(devices):
        cmd += [f"--name=run{i}", f"--filename={dev}", "--stonewall"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    side = "read" if "read" in rw else "write"
    return [job[side]["bw"] / 1024 for job in json.loads(res.stdout)["jobs"]]


def fill(device: str) -> None:
    """Write the measured region once: a sparse volume's first reads hit holes (no
    disk read at all), which made the one-host reads, measured first, look fast."""
    subprocess.run(["fio", "--name=fill", f"--filename={device}", "--direct=1",
                    "--ioengine=libaio", "--iodepth=16", "--rw=write", "--bs=1M",
                    "--size=48M"], capture_output=True, text=True, check=True)


def settle(pause: float = 1.0) -> None:
    """Let udev and the kernel finish what the last step started (device probes)."""
    subprocess.run(["udevadm", "settle", "-t", "60"], check=False)
    time.sleep(pause)


def data_path(lab: Lab, runtime: int, pairs: int) -> dict:
    """fio on host A: a volume attached to A alone ("one") against an identical
    volume attached to A and B ("two"), in adjacent runs.

    Paired runs seconds apart, in one-two two-one order, see the same state of the
    machine: under emulation a run's figure drifts by 20-50% over a minute, which
    swamped the first design (the same volume measured before and after B attached).
    Halfway through, B moves to the other volume, so neither volume's own
    placement (its loop device, its target) can pass for B's effect."""
    from shareblock.lab.hosts import Host
    out = {}
    for transport, target, proto in (("lio", lab.lio, "iscsi"),
                                     ("nvmet", lab.nvmet, "nvmet_tcp")):
        vols = [f"fio-{transport}-x", f"fio-{transport}-y"]
        a = [Host(proto, f"fio-a-{transport}") for _ in vols]  # one identity, two sessions
        b = Host(proto, f"fio-b-{transport}")
        got = out[transport] = {name: {"one": [], "two": []} for name in FIO_JOBS}
        try:
            devs = []
            for vol, host in zip(vols, a, strict=True):
                target.export(vol, loops.attach(loops.sparse_file(SCRATCH / f"{vol}.img", 128)))
                devs.append(str(host.connect(target.admit(vol, host.id, "rw", host.credentials))))
                fill(devs[-1])
            for half, shared in enumerate((1, 0)):  # B on y, then on x
                if half:
                    b.disconnect()
                    target.revoke(vols[1], b.id)
                b.connect(target.admit(vols[shared], b.id, "rw", b.credentials))
                settle()  # B's new disk is probed by udev (blkid reads it): not A's bill
                two, one = devs[shared], devs[1 - shared]
                order = [d for k in range(pairs)
                         for d in ((one, two) if k % 2 == 0 else (two, one))]
                for name, (rw, bs) in FIO_JOBS.items():
                    for dev, bw in zip(order, fio(order, rw, bs, runtime), strict=True):
                        got[name]["two" if dev == two else "one"].append(bw)
            for name, g in got.items():
                log(f"fio {transport} {name}: one host {median(g['one']):.1f} MB/s, "
                    f"two hosts {median(g['two']):.1f} MB/s ({len(g['one'])} runs each)")
        finally:
            for host in (*a, b):  # every session ends before A's shared iface goes
                host.disconnect()
            for host in (*a, b):
                host.cleanup()
            for vol in vols:
                target.unexport(vol)
    return out


# --- E: the guard ----------------------------------------------------------------------------
def copy_head(src: str, dst: str, size: int = 4 << 20) -> None:
    """The first `size` bytes of src written over dst (superblocks and group tables)."""
    with open(src, "rb") as f:
        head = f.read(size)
    fd = os.open(dst, os.O_WRONLY)
    try:
        os.pwrite(fd, head, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def build_guard_volumes(conf: str, first: int, step: int, volumes: int) -> None:
    """Volumes g<first>, g<first + step>, ... below g<volumes>, two rw hosts each."""
    cp = ControlPlane(config_mod.load(conf))
    for i in range(first, volumes, step):
        vol = cp.create(1, "ma-iSCSI", name=f"g{i}")["id"]
        for j in range(2):
            att = cp.attachment_create(vol, {"initiator": iqn(f"g{i}-{j}"), "host": f"g{i}-{j}"})
            cp.attachment_complete(att["id"])
        if first == 0 and i and i % 100 == 0:
            log(f"guard: about {i} volumes built")


def guard(lab: Lab, volumes: int, samples: int) -> dict:
    from shareblock.blockdev import fsprobe
    blank = loops.attach(loops.sparse_file(SCRATCH / "probe-blank.img", 64))
    ext4 = loops.attach(loops.sparse_file(SCRATCH / "probe-ext4.img", 64))
    subprocess.run(["mkfs.ext4", "-q", "-F", ext4], check=True, capture_output=True)
    out = {"probe blank": [timed(fsprobe.probe, blank) for _ in range(samples)],
           "probe ext4": [timed(fsprobe.probe, ext4) for _ in range(samples)]}
    # Volumes are sparse and never written: let the pool (the guest's small /tmp)
    # over-subscribe enough for all of them, as an operator sets it for thin pools.
    cp = lab.control_plane("guard", max_over_subscription_ratio=100_000)
    # Built by one process per CPU, each with its own control plane on the same
    # database and target, as concurrent API callers would: set-up, not measured.
    start = time.perf_counter()
    workers = max(1, min(os.cpu_count() or 1, volumes))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.starmap(build_guard_volumes, [(str(lab.conf_path("guard")), k, workers, volumes)
                                           for k in range(workers)])
    out["build"] = time.perf_counter() - start
    out["volumes"] = volumes
    log(f"guard: {volumes} multiattach volumes with 2 rw hosts built in {out['build']:.1f} s "
        f"by {workers} processes")
    # One of them gets ext4 behind its two writers' backs: the pass has one to demote.
    # (mkfs refuses a device the target holds open: the image's head is copied on.)
    last = cp.show(f"g{volumes - 1}")["id"]
    copy_head(ext4, cp.driver("lio").pool.device(last))  # "lio": where ma-iSCSI volumes go
    start = time.perf_counter()
    actions = cp.guard_pass()
    out["pass"] = time.perf_counter() - start
    out["demoted"] = sum(a["action"] == "demoted" for a in actions)
    if out["demoted"] != 1:
        raise RuntimeError(f"guard pass: expected one demotion (g{volumes - 1}), got {actions}")
    # The full path again, now with `volumes` volumes in its database and state file.
    atts = {}
    vol = cp.show("g0")["id"]

    def admit(h):
        atts[h] = cp.attachment_create(vol, {"initiator": h, "host": h[-16:]})["id"]
    full = Tool("full", admit, lambda h: cp.attachment_delete(atts.pop(h)))
    out["full path at scale"] = measure_together([full], {"full": iqn("gfull-{i}")}, samples,
                                                 1e9, samples)["full"]
    # ... and again while Prometheus scrapes every second (another thread, its own
    # control plane, as shareblock-exporter runs beside the API)
    scraper = ControlPlane(config_mod.load(str(lab.conf_path("guard"))))
    stop_scraping = threading.Event()

    def scrape_every_second():
        while not stop_scraping.wait(1.0):
            generate_latest(registry_for(scraper))
    thread = threading.Thread(target=scrape_every_second, daemon=True)
    thread.start()
    try:
        out["full path at scale, scraped"] = measure_together(
            [full], {"full": iqn("gscraped-{i}")}, samples, 1e9, samples)["full"]
    finally:
        stop_scraping.set()
        thread.join(30)
    # Fencing at that scale: one node (a host of one volume) fenced and unfenced,
    # and fence-list over every node the control plane knows (two per volume)
    out["fence"] = {"fence": [], "unfence": []}
    for _ in range(samples):
        out["fence"]["fence"].append(timed(cp.fence, "g0-0"))
        out["fence"]["unfence"].append(timed(cp.unfence, "g0-0"))
    out["fence list"] = timed(cp.fence_list)
    log(f"fence / unfence one node among {volumes} volumes: "
        f"{median(out['fence']['fence']) * 1e3:.1f} / "
        f"{median(out['fence']['unfence']) * 1e3:.1f} ms; fence-list over {2 * volumes} "
        f"nodes: {out['fence list']:.2f} s")
    log(f"guard pass over {volumes} volumes: {out['pass']:.2f} s; probe "
        f"{median(out['probe blank']) * 1e3:.1f} ms blank, "
        f"{median(out['probe ext4']) * 1e3:.1f} ms ext4")
    return out


# --- F: the exporter's scrape against the number of exports --------------------------------
def rtslib_walk() -> int:
    """The peer: what an exporter built on rtslib-fb reads for the same figures,
    every ACL of every target (its walk of configfs) with its mapped LUN's
    write-protect, session and counters. Returns the ACLs it read."""
    from rtslib_fb import RTSRoot
    acls = 0
    for acl in RTSRoot().node_acls:
        acl.session  # noqa: B018 (read for its cost, as an exporter would)
        for mapped in acl.mapped_luns:
            mapped.write_protect  # noqa: B018
            for name in ("num_cmds", "read_mbytes", "write_mbytes"):
                Path(mapped.path, "statistics", "scsi_auth_intr", name).read_text()
        acls += 1
    return acls


def configfs_walk(root: str = "/sys/kernel/config/nvmet") -> int:
    """The peer for nvmet (no rtslib-fb there): every attribute under nvmet's
    configfs read, as nvmetcli's dump reads them. Returns the files it read."""
    files = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                Path(folder, name).read_bytes()
                files += 1
    return files


def scrape(lab: Lab, stops: list[int], samples: int, peer_limit: float = 60.0) -> dict:
    """One scrape of shareblock-exporter at growing numbers of exports (volumes of
    its own control plane and target names: one per transport and stop, one host
    each), split into its parts: the control plane's SQLite reads, each target's
    read (hosts_only, and the full read-back beside it), the text exposition; and
    a peer that walks configfs for the same facts (all of it: other scenarios'
    exports too), while it stays under `peer_limit` seconds."""
    from rtslib_fb import RTSRoot  # noqa: F401 (imported once, not inside a timing)
    cp = lab.control_plane("scrape", max_over_subscription_ratio=100_000,
                           shareblock_iqn_prefix="iqn.2026-11.io.shareblock.scrape",
                           shareblock_nqn_prefix="nqn.2026-11.io.shareblock.scrape")
    registry = registry_for(cp)
    drivers = {"lio": cp.driver("lio"), "nvmet": cp.driver("nvme")}
    walking = {"rtslib-fb walk (LIO)": rtslib_walk, "configfs walk (nvmet)": configfs_walk}
    out, made = {}, 0
    for stop in stops:
        for transport in FILLER_KINDS:
            make_fillers(cp, "scrape", transport, made, stop)
        made = stop
        text = generate_latest(registry)
        row = {"exports": 2 * stop,
               "series": sum(1 for line in text.splitlines() if not line.startswith(b"#")),
               "scrape": [timed(generate_latest, registry) for _ in range(samples)],
               "collect": [timed(list, registry.collect()) for _ in range(samples)],
               "control plane": [timed(cp.volume_list) for _ in range(samples)]}
        for name, drv in drivers.items():
            row[f"{name} read"] = [timed(drv.exports, None, True) for _ in range(samples)]
            row[f"{name} read-back"] = [timed(drv.exports) for _ in range(samples)]
        for peer, walk in walking.items():
            earlier = [r["peers"][peer] for r in out.values() if peer in r.get("peers", {})]
            if not earlier or earlier[-1] < peer_limit:
                row.setdefault("peers", {})[peer] = timed(walk)
        out[stop] = row
        log(f"scrape at {2 * stop} exports ({row['series']} series): "
            f"{median(row['scrape']) * 1e3:.0f} ms; LIO read {median(row['lio read']) * 1e3:.0f}"
            f" ms, nvmet read {median(row['nvmet read']) * 1e3:.0f} ms; peers "
            + ", ".join(f"{k} {v:.2f} s" for k, v in row.get("peers", {}).items()))
    return out


def environment() -> dict:
    def read(path):
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""
    cpu = next((line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), "")
    mem = next((int(line.split()[1]) >> 10 for line in read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal")), 0)
    lab = os.environ.get("SHAREBLOCK_BENCH_LAB", "")
    return {"kernel": os.uname().release, "cpu": cpu, "cpus": os.cpu_count(), "memory_mb": mem,
            "machine": " ".join(filter(None, (read("/sys/class/dmi/id/sys_vendor"),
                                              read("/sys/class/dmi/id/product_name")))),
            # shareblock-lab's VM runs without KVM unless told: QEMU software emulation
            "emulated": lab == "vm" and os.environ.get("SHAREBLOCK_LAB_KVM") != "1",
            "host_cpu": os.environ.get("SHAREBLOCK_BENCH_HOST_CPU", ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
