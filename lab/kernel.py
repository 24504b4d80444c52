"""Fetch the lab's Debian kernels without installing them.

`default`: bookworm's 6.12 LTS (nvmet auth, nvme-loop), from this machine's apt.
`backports`: trixie-backports' newest (7.x), which has nvmet reservations (6.13+),
fetched through a private apt list so that this machine's apt set-up is untouched.
"""
import logging
import os
import shutil
import subprocess
from pathlib import Path

LOG = logging.getLogger(__name__)

# The meta package tracks bookworm's 6.12 LTS kernel; it has nvmet auth and nvme-loop.
META_PACKAGE = "linux-image-6.12-amd64"
KERNELS = ("default", "backports")
BACKPORTS_SUITE = "trixie-backports"
BACKPORTS_META = "linux-image-amd64"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class KernelError(RuntimeError):
    pass


def parse_depends(apt_cache_output: str, meta: str = META_PACKAGE) -> str:
    """The versioned image package a meta package depends on."""
    for line in apt_cache_output.splitlines():
        line = line.strip()
        if line.startswith("Depends:"):
            name = line.split(":", 1)[1].strip()
            if name.startswith("linux-image-") and name != meta:
                return name
    raise KernelError(f"apt-cache shows no kernel image behind {meta}")


def _apt_cache_depends(meta: str) -> str:
    res = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else ""


def resolve_package(meta: str = META_PACKAGE) -> str:
    out = _apt_cache_depends(meta)
    if "Depends:" not in out:
        LOG.info("apt lists do not know %s yet: apt-get update", meta)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        out = _apt_cache_depends(meta)
    return parse_depends(out, meta)


def find_image(root: Path) -> Path | None:
    images = sorted(root.glob("boot/vmlinuz-*"))
    return images[-1] if images else None


def fetch_kernel(name: str, cache: Path) -> Path:
    """The image of the lab kernel `name` (KERNELS), fetched once into `cache`."""
    if name == "default":
        return fetch(cache / "kernel")
    if name == "backports":
        return fetch_backports(cache / "kernel-backports")
    raise KernelError(f"unknown lab kernel {name!r}: {' or '.join(KERNELS)}")


def _complete(cache: Path) -> Path | None:
    """The image of a kernel this cache already holds whole, if any."""
    cache.mkdir(parents=True, exist_ok=True)
    for done in sorted(cache.glob("*/.complete")):
        image = find_image(done.parent)
        if image:
            return image
    return None


def _partial(cache: Path, name: str) -> Path:
    """An empty folder to unpack `name` into, beside where it will live."""
    work = cache / (name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def _finish(work: Path, dest: Path) -> Path:
    """The unpacked tree moved into place, marked whole."""
    (work / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)  # a crash before this leaves only a .partial folder
    return find_image(dest)


def fetch(cache: Path, meta: str = META_PACKAGE) -> Path:
    """Return the kernel image path, downloading and unpacking it once.

    The unpacked tree keeps `boot/` and `lib/modules/<ver>` side by side, which is
    where virtme-ng looks for modules (walking up from the image).
    """
    image = _complete(cache)
    if image:
        return image
    package = resolve_package(meta)
    work = _partial(cache, package)
    print(f"[lab] downloading {package} (unpacked, not installed)", flush=True)
    subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
                   cwd=work, check=True)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise KernelError(f"apt-get download left {len(debs)} .deb files in {work}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work)], check=True)
    debs[0].unlink()
    if not find_image(work):
        raise KernelError(f"{package} holds no boot/vmlinuz-*")
    return _finish(work, cache / package)


def mirror(sources: Path = DEBIAN_SOURCES) -> str:
    """This machine's Debian mirror (deb822 sources), else deb.debian.org."""
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for line in text.splitlines():
        if line.startswith("URIs:"):
            for uri in line.split()[1:]:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def _apt(apt_dir: Path) -> list[str]:
    """apt options for a private list of one suite (nothing of /etc/apt is changed)."""
    return ["-o", f"Dir::Etc::sourcelist={apt_dir / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}", "-o", "APT::Sandbox::User=root"]


def fetch_backports(cache: Path, suite: str = BACKPORTS_SUITE) -> Path:
    """The backports kernel's image, downloaded, unpacked and given a module index
    once. Its packages split the image (`linux-binary-*`) from the modules
    (`linux-modules-*`), under usr/lib/modules and without modules.dep: the tree
    gets boot/vmlinuz-<ver> and lib/modules as the 6.12 one has them (where
    virtme-ng looks), and depmod writes the index."""
    image = _complete(cache)
    if image:
        return image
    apt_dir = cache / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror()} "
        f"{suite} main\n")
    opts = _apt(apt_dir)
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    shown = subprocess.run(["apt-cache", *opts, "depends", BACKPORTS_META],
                           capture_output=True, text=True)
    version = parse_depends(shown.stdout, BACKPORTS_META).removeprefix("linux-image-")
    packages = [f"linux-binary-{version}", f"linux-modules-{version}"]
    split = subprocess.run(["apt-cache", *opts, "show", packages[0]],
                           capture_output=True).returncode == 0
    if not split:
        packages = [f"linux-image-{version}"]
    work = _partial(cache, version)
    print(f"[lab] downloading {', '.join(packages)} from {suite} (unpacked, not installed)",
          flush=True)
    subprocess.run(["apt-get", *opts, "download", "-q", *packages], cwd=work, check=True)
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True)
        deb.unlink()
    modules = work / "usr/lib/modules" / version
    if (modules / "vmlinuz").exists() and not find_image(work):
        (work / "boot").mkdir(exist_ok=True)
        shutil.copy2(modules / "vmlinuz", work / "boot" / f"vmlinuz-{version}")
    if modules.is_dir() and not (work / "lib/modules").exists():
        (work / "lib").mkdir(exist_ok=True)
        os.symlink("../usr/lib/modules", work / "lib/modules")
    if not find_image(work):
        raise KernelError(f"{', '.join(packages)} hold no kernel image")
    done = subprocess.run(["depmod", "-b", str(work), version], capture_output=True, text=True)
    if done.returncode:  # (its warnings of files Debian leaves out are noise)
        raise KernelError(f"depmod failed: {done.stderr.strip()}")
    return _finish(work, cache / version)
