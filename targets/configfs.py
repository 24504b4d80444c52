"""One compact configfs node type: a folder with attributes, children and links.

Paths are built only from validated names (see names.py) and always checked to
stay below the node's root, so no value can reach outside its configfs folder.
Every operation is idempotent: creating what exists or removing what is gone is
not an error, which is what makes resuming after a crash converge.

Paths are kept as strings and used with plain os calls: under emulation,
pathlib's object churn cost more than the configfs writes of a per-host admit.
"""
import bisect
import errno
import os
import stat
from pathlib import Path

CONFIGFS = Path(os.environ.get("SHAREBLOCK_CONFIGFS", "/sys/kernel/config"))


class ConfigfsError(RuntimeError):
    pass


class Node:
    __slots__ = ("_p", "_root")

    def __init__(self, path: Path | str, root: Path | str | None = None):
        full = Path(path)
        base = Path(root) if root is not None else full
        if not full.is_relative_to(base) or ".." in full.parts:
            raise ConfigfsError(f"{full} is outside {base}")
        self._p = str(full)
        self._root = str(base)

    def __truediv__(self, name: str) -> "Node":
        if not name or "/" in name or name in (".", ".."):
            raise ConfigfsError(f"bad configfs name {name!r}")
        # One checked name below a checked node stays below the root: no re-check.
        child = Node.__new__(Node)
        child._p = f"{self._p}/{name}"
        child._root = self._root
        return child

    @property
    def path(self) -> Path:
        return Path(self._p)

    @property
    def root(self) -> Path:
        return Path(self._root)

    def __repr__(self) -> str:
        return f"Node({self._p!r})"

    @property
    def name(self) -> str:
        return self._p.rsplit("/", 1)[-1]

    def exists(self) -> bool:
        return os.path.isdir(self._p)

    def create(self, groups: tuple[str, ...] = ()) -> "Node":
        """mkdir, plus the default groups the kernel makes with it (named so that a
        plain folder tree, as in unit tests, takes the same shape)."""
        for path in (self._p, *(f"{self._p}/{g}" for g in groups)):
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError as e:
                raise ConfigfsError(f"mkdir {path}: {e.strerror}") from e
        return self

    def remove(self) -> None:
        try:
            os.rmdir(self._p)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ConfigfsError(f"rmdir {self._p}: {e.strerror}") from e

    def children(self) -> list[str]:
        try:
            with os.scandir(self._p) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def children_named(self, prefix: str) -> list[str]:
        """The entries whose name starts with prefix, in a folder that holds only
        items (nvmet's subsystems): one listing sorted in C and a binary search, not
        a Python pass over every entry (thousands of volumes' subsystems)."""
        try:
            names = sorted(os.listdir(self._p))
        except FileNotFoundError:
            return []
        found = []
        for name in names[bisect.bisect_left(names, prefix):]:
            if not name.startswith(prefix):
                break
            found.append(name)
        return found

    def links(self) -> dict[str, Path]:
        """Symlinks in this folder and where they point."""
        try:
            with os.scandir(self._p) as entries:
                return {e.name: Path(os.readlink(e.path)) for e in entries if e.is_symlink()}
        except FileNotFoundError:
            return {}

    def read(self, attr: str, default: str | None = None) -> str | None:
        path = f"{self._p}/{attr}"
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.read(fd, 65536)
            finally:
                os.close(fd)
            return data.decode().strip()
        except (FileNotFoundError, NotADirectoryError):
            return default
        except OSError as e:
            if default is not None:
                return default
            raise ConfigfsError(f"read {path}: {e.strerror}") from e

    def write(self, attr: str, value: str | int, secret: bool = False,
              check: bool = True) -> None:
        """Write one attribute unless it already holds the value (configfs often
        refuses rewriting live attributes, and an unchanged write is wasted work).
        `check=False` skips that read, for a folder this call chain just made."""
        text = str(value)
        path = f"{self._p}/{attr}"
        if check:
            try:
                if self.read(attr) == text:
                    return
            except ConfigfsError:
                pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as e:
            shown = "<secret>" if secret else repr(text)
            raise ConfigfsError(f"write {shown} to {path}: {e.strerror}") from e

    def set(self, attrs: dict[str, str | int]) -> None:
        for attr, value in attrs.items():
            self.write(attr, value)

    def has_link(self, name: str) -> bool:
        return os.path.islink(f"{self._p}/{name}")

    def link(self, name: str, target: "Node") -> None:
        path = f"{self._p}/{name}"
        try:
            os.symlink(target._p, path)
        except FileExistsError:
            if (stat.S_ISLNK(os.lstat(path).st_mode)
                    and os.readlink(path).rstrip("/").rsplit("/", 1)[-1] != target.name):
                raise ConfigfsError(f"{path} links elsewhere ({os.readlink(path)})") from None
        except OSError as e:
            raise ConfigfsError(f"link {path} -> {target._p}: {e.strerror}") from e

    def unlink(self, name: str) -> None:
        path = f"{self._p}/{name}"
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise ConfigfsError(f"unlink {path}: {e.strerror}") from e
