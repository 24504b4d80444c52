"""A fake configfs tree (plain folders) and a fake device-mapper for unit tests."""
import json
import os
import shutil
from pathlib import Path

from shareblock.targets import devmapper


def snapshot(root: Path) -> dict:
    """Everything in a tree: files with contents, links with targets, folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "/"
            else:
                out[rel] = path.read_text()
    return out


def fake_configfs(root: Path) -> Path:
    for sub in ("target/core", "target/iscsi", "nvmet/subsystems", "nvmet/hosts",
                "nvmet/ports"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def fake_lio_export(root: Path, target, volume_id: str, device: str) -> None:
    """The tree LioTarget.export() makes through rtslib on a real kernel."""
    tpg = target.tpg(volume_id).path
    for sub in ("acls", "attrib", "np", "lun/lun_0"):
        (tpg / sub).mkdir(parents=True, exist_ok=True)
    index = target.backstore_index(volume_id)
    so = root / "target/core" / f"iblock_{index}" / target.backstore_name(volume_id)
    so.mkdir(parents=True, exist_ok=True)
    (so / "udev_path").write_text(device + "\n")
    link = tpg / "lun/lun_0" / target.backstore_name(volume_id)
    if not link.is_symlink():
        link.symlink_to(so)
    from shareblock.targets.lio import TPG_ATTRIBUTES
    for attr, value in TPG_ATTRIBUTES.items():
        (tpg / "attrib" / attr).write_text(value)


class FakeDm:
    """device-mapper views kept in a dict: name -> table line."""

    def __init__(self):
        self.tables: dict[str, str] = {}
        self.calls: list[tuple] = []

    def ensure(self, name, device, mode):
        self.calls.append(("ensure", name, mode))
        self.tables[name] = devmapper.table(device, mode, size=131072)
        return devmapper.path(name)

    def remove(self, name):
        self.calls.append(("remove", name))
        self.tables.pop(name, None)

    def current_table(self, name):
        return self.tables.get(name)

    def views(self, volume_id):
        head = f"sb-{volume_id}-"
        return [n for n in self.tables if n.startswith(head)]

    def stats(self, name):
        return {"num_cmds": 0, "read_mbytes": 0, "write_mbytes": 0} if name in self.tables else None


def configfs_rmdir(self) -> None:
    """Node.remove as configfs behaves: an item's attributes and default groups go
    with it, but a child item or a link inside keeps it (ENOTEMPTY)."""
    from shareblock.targets.configfs import ConfigfsError

    def leaf_group(path: Path) -> bool:
        return all(p.is_file() and not p.is_symlink() for p in path.iterdir())

    path = self.path
    if not path.is_dir():
        return
    entries = list(path.iterdir())
    if any(p.is_symlink() or (p.is_dir() and not leaf_group(p)) for p in entries):
        raise ConfigfsError(f"rmdir {path}: Directory not empty")
    for p in entries:
        if p.is_dir():
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
        else:
            p.unlink()
    path.rmdir()


def configfs_mkdir_with_auth(original):
    """Node.create as a kernel with CONFIG_NVME_TARGET_AUTH: host entries get dhchap_*."""
    def create(self, groups=()):
        node = original(self, groups)
        if self.path.parent.name == "hosts" and self.path.parent.parent.name == "nvmet":
            for attr in ("dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup"):
                if not (self.path / attr).exists():
                    (self.path / attr).write_text("")
        return node
    return create


def configfs_mkdir_with_reservations(original):
    """Node.create as a kernel with nvmet reservations (6.13+): namespaces get
    resv_enable, off."""
    def create(self, groups=()):
        node = original(self, groups)
        if self.path.parent.name == "namespaces" and not (self.path / "resv_enable").exists():
            (self.path / "resv_enable").write_text("0")
        return node
    return create


def fake_lio_unexport(root: Path, target, volume_id: str) -> None:
    """What rtslib's recursive Target.delete() and StorageObject.delete() leave: nothing."""
    import shutil
    shutil.rmtree(target.iscsi.path / target.target_iqn(volume_id), ignore_errors=True)
    index = target.backstore_index(volume_id)
    shutil.rmtree(root / "target/core" / f"iblock_{index}", ignore_errors=True)


class Conf(dict):
    """Cinder's Configuration interface (safe_get) over a dict."""

    def safe_get(self, name):
        return self.get(name)


class MemoryPool:
    """Volumes as sizes and a data tag each (what a copy would carry over)."""

    def __init__(self):
        self.volumes = {}
        self.data = {}
        self.snapshots = {}  # id -> (volume id, data tag)

    def create(self, vid, size):
        self.volumes[vid] = size
        self.data.setdefault(vid, f"blank-{vid}")
        return self.device(vid)

    def snapshot(self, vid, sid):
        if vid not in self.volumes:
            raise RuntimeError(f"no volume {vid}")
        self.snapshots.setdefault(sid, (vid, self.data[vid]))
        return "copy"

    def delete_snapshot(self, sid):
        self.snapshots.pop(sid, None)

    def from_snapshot(self, sid, vid, size):
        self.volumes[vid] = size
        self.data[vid] = self.snapshots[sid][1]
        return self.device(vid)

    def revert(self, vid, sid, size):
        self.data[vid] = self.snapshots[sid][1]

    def device(self, vid):
        return f"/dev/fake/{vid}"

    def backing(self, vid):
        return None

    def delete(self, vid):
        self.volumes.pop(vid, None)

    def extend(self, vid, size):
        self.volumes[vid] = size

    def clone(self, src, vid, size):
        self.volumes[vid] = size
        self.data[vid] = self.data[src]

    def capacity(self):
        return {"total_capacity_gb": 100.0, "free_capacity_gb": 90.0,
                "provisioned_capacity_gb": float(sum(self.volumes.values())
                                                 + sum(self.volumes.get(v, 0)
                                                       for v, _ in self.snapshots.values()))}


class ImagePool:
    """Volumes as plain image files, so blkid and mkfs work on them without loop
    devices (the guard's case). `image_mb`: each image's size."""

    def __init__(self, folder, image_mb: int = 8):
        self.folder = folder
        self.image_mb = image_mb
        folder.mkdir(parents=True, exist_ok=True)

    def device(self, vid):
        return str(self.folder / f"{vid}.img")

    def backing(self, vid):
        return None

    def create(self, vid, size):
        with open(self.device(vid), "wb") as f:
            f.truncate(self.image_mb << 20)
        return self.device(vid)

    def delete(self, vid):
        (self.folder / f"{vid}.img").unlink(missing_ok=True)

    def _snap(self, sid):
        return self.folder / "snapshots" / f"{sid}.img"

    def snapshot(self, vid, sid):
        self._snap(sid).parent.mkdir(exist_ok=True)
        shutil.copyfile(self.device(vid), self._snap(sid))
        return "copy"

    def delete_snapshot(self, sid):
        self._snap(sid).unlink(missing_ok=True)

    def from_snapshot(self, sid, vid, size):
        shutil.copyfile(self._snap(sid), self.device(vid))
        return self.device(vid)

    def clone(self, src, vid, size):
        shutil.copyfile(self.device(src), self.device(vid))
        return self.device(vid)

    def revert(self, vid, sid, size):
        shutil.copyfile(self._snap(sid), self.device(vid))

    def capacity(self):
        return {"total_capacity_gb": 10.0, "free_capacity_gb": 10.0,
                "provisioned_capacity_gb": 0.0}


def fake_driver(root: Path, state_dir: Path, protocol: str, name: str, multiattach=True):
    """A real ShareBlockDriver over a fake configfs tree, fake dm and a memory pool.
    The caller patches Node.create/remove and devmapper.sectors (see fake_kernel)."""
    from shareblock.driver.volume_driver import ShareBlockDriver
    from shareblock.targets.desired import DesiredStore
    from shareblock.targets.recorded import RecordedTarget
    conf = Conf(target_protocol=protocol, volume_backend_name=name,
                shareblock_pool="file:/x", shareblock_multiattach=multiattach,
                shareblock_state_path=str(state_dir))
    target = RecordedTarget(fake_kernel_target(root, protocol),
                            DesiredStore(state_dir / "node"))
    drv = ShareBlockDriver(conf, target=target, pool=MemoryPool())
    drv.do_setup()
    return drv


def node_files(state_dir: Path) -> dict:
    """The node's desired-state documents under a fake driver's state dir, by path."""
    return {str(p.relative_to(state_dir)): p.read_bytes()
            for p in sorted((Path(state_dir) / "node").glob("*/*.json"))}


def node_secrets(state_dir: Path) -> list[str]:
    """Every secret the node's documents hold."""
    found = []
    for data in node_files(state_dir).values():
        for host in json.loads(data)["hosts"]:
            found += [v for k, v in host.get("credentials", {}).items()
                      if "secret" in k or "key" in k]
    return found


def fake_kernel_target(root: Path, protocol: str, portals=None, prefix=None):
    """A real LioTarget or NvmetTarget over a fake configfs tree and fake dm."""
    from shareblock.targets.base import Portal
    from shareblock.targets.lio import DEFAULT_PREFIX as IQN_PREFIX
    from shareblock.targets.lio import LioTarget
    from shareblock.targets.nvmet import DEFAULT_PREFIX as NQN_PREFIX
    from shareblock.targets.nvmet import NvmetTarget
    portals = portals or [Portal("127.0.0.1", 3260 if protocol == "iscsi" else 4420)]
    if protocol == "iscsi":
        target = LioTarget(portals, prefix or IQN_PREFIX, configfs=root)
        target.export = (lambda vol, dev, backing=None, hosts=None, shared_reservations=False:
                         fake_lio_export(root, target, vol, dev))
        target.unexport = lambda vol: fake_lio_unexport(root, target, vol)
        return target
    return NvmetTarget(portals, prefix or NQN_PREFIX, configfs=root, dm=FakeDm())


def fake_kernel(monkeypatch, root: Path, reservations: bool = False) -> Path:
    """Make Node and devmapper behave as on a kernel, over a plain folder tree
    (`reservations`: a kernel whose nvmet has them, 6.13 and later)."""
    from shareblock.targets.configfs import Node
    fake_configfs(root)
    monkeypatch.setattr(Node, "remove", configfs_rmdir)
    create = configfs_mkdir_with_auth(Node.create)
    if reservations:
        create = configfs_mkdir_with_reservations(create)
    monkeypatch.setattr(Node, "create", create)
    monkeypatch.setattr(devmapper, "sectors", lambda device: 131072)
    return root
