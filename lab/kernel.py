"""Fetch Debian's 6.12 kernel for the lab without installing it."""
import logging
import shutil
import subprocess
from pathlib import Path

LOG = logging.getLogger(__name__)

# The meta package tracks bookworm's 6.12 LTS kernel; it has nvmet auth and nvme-loop.
META_PACKAGE = "linux-image-6.12-amd64"


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


def fetch(cache: Path, meta: str = META_PACKAGE) -> Path:
    """Return the kernel image path, downloading and unpacking it once.

    The unpacked tree keeps `boot/` and `lib/modules/<ver>` side by side, which is
    where virtme-ng looks for modules (walking up from the image).
    """
    cache.mkdir(parents=True, exist_ok=True)
    for done in sorted(cache.glob("*/.complete")):
        image = find_image(done.parent)
        if image:
            return image
    package = resolve_package(meta)
    dest = cache / package
    work = cache / (package + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
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
    (work / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)  # a crash before this leaves only a .partial folder
    return find_image(dest)
