"""One compact configfs node type: a folder with attributes, children and links.

Paths are built only from validated names (see names.py) and always checked to
stay below the node's root, so no value can reach outside its configfs folder.
Every operation is idempotent: creating what exists or removing what is gone is
not an error, which is what makes resuming after a crash converge.
"""
import errno
import os
from pathlib import Path

CONFIGFS = Path(os.environ.get("SHAREBLOCK_CONFIGFS", "/sys/kernel/config"))


class ConfigfsError(RuntimeError):
    pass


class Node:
    __slots__ = ("path", "root")

    def __init__(self, path: Path | str, root: Path | None = None):
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path
        if not self.path.is_relative_to(self.root) or ".." in self.path.parts:
            raise ConfigfsError(f"{self.path} is outside {self.root}")

    def __truediv__(self, name: str) -> "Node":
        if not name or "/" in name or name in (".", ".."):
            raise ConfigfsError(f"bad configfs name {name!r}")
        # One checked name below a checked node stays below the root: no re-check
        # (pathlib's is_relative_to dominated the cost of a per-host admit).
        child = Node.__new__(Node)
        child.path = self.path / name
        child.root = self.root
        return child

    def __repr__(self) -> str:
        return f"Node({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self, groups: tuple[str, ...] = ()) -> "Node":
        """mkdir, plus the default groups the kernel makes with it (named so that a
        plain folder tree, as in unit tests, takes the same shape)."""
        for path in (self.path, *(self.path / g for g in groups)):
            try:
                path.mkdir()
            except FileExistsError:
                pass
            except OSError as e:
                raise ConfigfsError(f"mkdir {path}: {e.strerror}") from e
        return self

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ConfigfsError(f"rmdir {self.path}: {e.strerror}") from e

    def children(self) -> list[str]:
        try:
            return sorted(p.name for p in self.path.iterdir() if p.is_dir()
                          and not p.is_symlink())
        except FileNotFoundError:
            return []

    def links(self) -> dict[str, Path]:
        """Symlinks in this folder and where they point."""
        try:
            return {p.name: Path(os.readlink(p)) for p in self.path.iterdir() if p.is_symlink()}
        except FileNotFoundError:
            return {}

    def read(self, attr: str, default: str | None = None) -> str | None:
        try:
            return (self.path / attr).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return default
        except OSError as e:
            if default is not None:
                return default
            raise ConfigfsError(f"read {self.path / attr}: {e.strerror}") from e

    def write(self, attr: str, value: str | int, secret: bool = False,
              check: bool = True) -> None:
        """Write one attribute unless it already holds the value (configfs often
        refuses rewriting live attributes, and an unchanged write is wasted work).
        `check=False` skips that read, for a folder this call chain just made."""
        text = str(value)
        path = self.path / attr
        if check:
            try:
                if path.read_text().strip() == text:
                    return
            except OSError:
                pass
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            shown = "<secret>" if secret else repr(text)
            raise ConfigfsError(f"write {shown} to {path}: {e.strerror}") from e

    def set(self, attrs: dict[str, str | int]) -> None:
        for attr, value in attrs.items():
            self.write(attr, value)

    def link(self, name: str, target: "Node") -> None:
        path = self.path / name
        try:
            os.symlink(target.path, path)
        except FileExistsError:
            if path.is_symlink() and Path(os.readlink(path)).name != target.name:
                raise ConfigfsError(f"{path} links elsewhere ({os.readlink(path)})") from None
        except OSError as e:
            raise ConfigfsError(f"link {path} -> {target.path}: {e.strerror}") from e

    def unlink(self, name: str) -> None:
        try:
            os.unlink(self.path / name)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise ConfigfsError(f"unlink {self.path / name}: {e.strerror}") from e
