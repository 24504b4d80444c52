"""The floor: the configfs writes an export, admit or revoke needs, and nothing else.

Plain mkdir, symlink and attribute writes with os calls: no library, no lookups,
no checks. What shareblock's targets layer does on top of these (validation,
idempotence, read-back) is its cost over the floor.
"""
import errno
import os

CONFIGFS = "/sys/kernel/config"
LIO = f"{CONFIGFS}/target"
NVMET = f"{CONFIGFS}/nvmet"
FLOOR_NODES = "/dev/shareblock-floor"
TPG_ATTRIBUTES = {"authentication": "1", "generate_node_acls": "0", "cache_dynamic_acls": "0",
                  "demo_mode_write_protect": "1", "demo_mode_discovery": "0",
                  "prod_mode_write_protect": "1"}


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass


def rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- LIO ------------------------------------------------------------------------------
def lio_tpg(iqn: str) -> str:
    return f"{LIO}/iscsi/{iqn}/tpgt_1"


def lio_export(iqn: str, hba: int, name: str, device: str, serial: str | None = None,
               portal: str = "127.0.0.1:3260") -> str:
    """iblock backstore, target, TPG with shareblock's attributes, portal, LUN 0."""
    so = f"{LIO}/core/iblock_{hba}/{name}"
    mkdir(f"{LIO}/core/iblock_{hba}")
    mkdir(so)
    write(f"{so}/control", f"udev_path={device}")
    write(f"{so}/udev_path", device)
    if serial:
        write(f"{so}/wwn/vpd_unit_serial", serial)
    write(f"{so}/enable", "1")
    mkdir(f"{LIO}/iscsi/{iqn}")
    tpg = lio_tpg(iqn)
    mkdir(tpg)
    for attr, value in TPG_ATTRIBUTES.items():
        write(f"{tpg}/attrib/{attr}", value)
    mkdir(f"{tpg}/np/{portal}")
    mkdir(f"{tpg}/lun/lun_0")
    os.symlink(so, f"{tpg}/lun/lun_0/{name}")
    write(f"{tpg}/enable", "1")
    return tpg


def lio_admit(tpg: str, host: str, user: str, secret: str, ro: bool = False) -> None:
    acl = f"{tpg}/acls/{host}"
    os.mkdir(acl)
    write(f"{acl}/auth/userid", user)
    write(f"{acl}/auth/password", secret)
    os.mkdir(f"{acl}/lun_0")
    os.symlink(f"{tpg}/lun/lun_0", f"{acl}/lun_0/shareblock")
    write(f"{acl}/lun_0/write_protect", "1" if ro else "0")


def lio_revoke(tpg: str, host: str) -> None:
    acl = f"{tpg}/acls/{host}"
    for name in os.listdir(f"{acl}/lun_0"):  # the link's name depends on the tool that made it
        if os.path.islink(f"{acl}/lun_0/{name}"):
            os.unlink(f"{acl}/lun_0/{name}")
    os.rmdir(f"{acl}/lun_0")
    os.rmdir(acl)


def lio_restore(exports: list[dict]) -> None:
    """Replay a plain document: [{iqn, hba, name, device, serial, hosts: [{host, user,
    secret, ro}]}]."""
    for e in exports:
        tpg = lio_export(e["iqn"], e["hba"], e["name"], e["device"], e.get("serial"))
        for h in e["hosts"]:
            lio_admit(tpg, h["host"], h["user"], h["secret"], h.get("ro", False))


def lio_clear() -> None:
    """Empty LIO's configfs (what a reboot leaves), whoever made the objects."""
    iscsi = f"{LIO}/iscsi"
    for iqn in _dirs(iscsi):
        if not iqn.startswith(("iqn.", "eui.", "naa.")):
            continue  # discovery_auth: the fabric's own group
        for tpgt in _dirs(f"{iscsi}/{iqn}"):
            if not tpgt.startswith("tpgt_"):
                continue
            tpg = f"{iscsi}/{iqn}/{tpgt}"
            try:
                write(f"{tpg}/enable", "0")
            except OSError:
                pass
            for acl in _dirs(f"{tpg}/acls"):
                for mapped in _dirs(f"{tpg}/acls/{acl}"):
                    if mapped.startswith("lun_"):
                        _unlink_all(f"{tpg}/acls/{acl}/{mapped}")
                        rmdir(f"{tpg}/acls/{acl}/{mapped}")
                rmdir(f"{tpg}/acls/{acl}")
            for lun in _dirs(f"{tpg}/lun"):
                _unlink_all(f"{tpg}/lun/{lun}")
                rmdir(f"{tpg}/lun/{lun}")
            for np in _dirs(f"{tpg}/np"):
                rmdir(f"{tpg}/np/{np}")
            rmdir(tpg)
        rmdir(f"{iscsi}/{iqn}")
    for hba in _dirs(f"{LIO}/core"):
        if "_" not in hba or hba == "alua":
            continue
        for so in _dirs(f"{LIO}/core/{hba}"):
            rmdir(f"{LIO}/core/{hba}/{so}")
        rmdir(f"{LIO}/core/{hba}")


# --- nvmet ------------------------------------------------------------------------------
def nvmet_admit(nqn: str, host: str, device: str, port: str, keys=None) -> None:
    """A subsystem of its own for one host: host keys, namespace, allowed host, port link."""
    mkdir(f"{NVMET}/hosts/{host}")
    if keys is not None:  # DH-HMAC-CHAP, as shareblock writes them
        write(f"{NVMET}/hosts/{host}/dhchap_hash", "hmac(sha256)")
        write(f"{NVMET}/hosts/{host}/dhchap_dhgroup", "ffdhe2048")
        write(f"{NVMET}/hosts/{host}/dhchap_key", keys.dhchap_key)
        write(f"{NVMET}/hosts/{host}/dhchap_ctrl_key", keys.dhchap_ctrl_key)
    sub = f"{NVMET}/subsystems/{nqn}"
    os.mkdir(sub)
    write(f"{sub}/attr_allow_any_host", "0")
    os.mkdir(f"{sub}/namespaces/1")
    write(f"{sub}/namespaces/1/device_path", device)
    write(f"{sub}/namespaces/1/enable", "1")
    os.symlink(f"{NVMET}/hosts/{host}", f"{sub}/allowed_hosts/{host}")
    os.symlink(sub, f"{NVMET}/ports/{port}/subsystems/{nqn}")


def nvmet_revoke(nqn: str, host: str, port: str) -> None:
    sub = f"{NVMET}/subsystems/{nqn}"
    unlink(f"{NVMET}/ports/{port}/subsystems/{nqn}")
    unlink(f"{sub}/allowed_hosts/{host}")
    write(f"{sub}/namespaces/1/enable", "0")
    rmdir(f"{sub}/namespaces/1")
    rmdir(sub)
    rmdir(f"{NVMET}/hosts/{host}")


def nvmet_port(port: str, address: str, service: int) -> None:
    path = f"{NVMET}/ports/{port}"
    mkdir(path)
    if not os.listdir(f"{path}/subsystems"):
        for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                            ("addr_traddr", address), ("addr_trsvcid", str(service))):
            try:
                write(f"{path}/{attr}", value)
            except OSError as e:
                if e.errno != errno.EACCES:  # an enabled port keeps its address
                    raise


def nvmet_clear(prefix: str = "") -> None:
    """Remove subsystems (and their port links and hosts) whose NQN starts with prefix."""
    for port in _dirs(f"{NVMET}/ports"):
        for name in os.listdir(f"{NVMET}/ports/{port}/subsystems"):
            if name.startswith(prefix):
                unlink(f"{NVMET}/ports/{port}/subsystems/{name}")
    for nqn in _dirs(f"{NVMET}/subsystems"):
        if not nqn.startswith(prefix):
            continue
        sub = f"{NVMET}/subsystems/{nqn}"
        _unlink_all(f"{sub}/allowed_hosts")
        for ns in _dirs(f"{sub}/namespaces"):
            write(f"{sub}/namespaces/{ns}/enable", "0")
            rmdir(f"{sub}/namespaces/{ns}")
        rmdir(sub)
    for host in _dirs(f"{NVMET}/hosts"):
        try:
            os.rmdir(f"{NVMET}/hosts/{host}")
        except OSError:
            pass  # still allowed by a subsystem that stays


def _dirs(path: str) -> list[str]:
    try:
        return [d.name for d in os.scandir(path) if d.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _unlink_all(path: str) -> None:
    for d in os.scandir(path):
        if d.is_symlink():
            os.unlink(d.path)


# --- the per-host dm view nvmet needs for read-only (device-mapper's ioctls) ----------
def dm_view(name: str, device: str) -> str:
    """Create, load and resume a linear view, and its block node: the three
    ioctls and one mknod a view needs, with no read-back. The ioctl buffers are
    packed by shareblock's devmapper (a struct layout, not a library call)."""
    from shareblock.targets import devmapper as dm
    created = dm.header(dm._ioctl(dm._DEV_CREATE, dm.pack(name), name))
    dm._ioctl(dm._TABLE_LOAD, dm.pack(name, targets=[dm._spec(dm.table(device, "rw"))]), name)
    dm._ioctl(dm._DEV_SUSPEND, dm.pack(name), name)
    # a folder udev does not manage, as shareblock's own views (/dev/shareblock): udev's
    # dm rules replace and remove /dev/mapper nodes on events that may lag under load
    node = f"{FLOOR_NODES}/{name}"
    os.makedirs(FLOOR_NODES, mode=0o700, exist_ok=True)
    try:
        os.mknod(node, 0o600 | 0o060000, created["dev"])
    except FileExistsError:  # a node of an earlier run's view of this name
        os.unlink(node)
        os.mknod(node, 0o600 | 0o060000, created["dev"])
    return node


def dm_view_remove(name: str) -> None:
    from shareblock.targets import devmapper as dm
    dm._ioctl(dm._DEV_REMOVE, dm.pack(name), name)
    try:
        os.unlink(f"{FLOOR_NODES}/{name}")
    except FileNotFoundError:
        pass
