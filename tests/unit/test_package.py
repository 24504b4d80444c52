"""The package's shape: each room imports from its own folder, the rooms depend
downwards only, and the control plane reaches backends through the driver's
public interface alone."""
import ast
import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from shareblock.cli import main as cli
from shareblock.driver.interface import VolumeDriverCore

REPO = Path(__file__).resolve().parents[2]
# what each room may import of shareblock's (itself always): lower rooms only
MAY_IMPORT = {
    "terminal": set(),  # the progress line
    "blockdev": set(),
    "targets": {"blockdev", "terminal"},
    "initiator": {"targets"},  # its private-file writer
    "driver": {"targets", "blockdev", "initiator"},  # Cinder's own attaches (cinder.py)
    "control": {"driver", "targets", "blockdev"},
    # a host on the node uses its control plane
    "host": {"control", "targets", "blockdev", "initiator"},
    "fence": {"cli"},  # the agent drives `shareblock`, here or over SSH
    "exporter": {"control", "driver"},  # reads the control plane and its drivers
    "systemd": set(),  # unit templates and their installer
}


def rooms() -> dict[str, Path]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pairs = [line.split("=") for line in cfg["options"]["package_dir"].split("\n") if line]
    return {name.strip(): REPO / folder.strip() for name, folder in pairs}


def modules_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def imports_of(path: Path) -> set[str]:
    """The shareblock rooms a module imports."""
    return {m.split(".")[1] for m in modules_imported(path)
            if m.startswith("shareblock.") and m.count(".")}


def test_each_room_imports_from_its_own_folder():
    mapped = rooms()
    assert set(MAY_IMPORT) <= {n.split(".")[1] for n in mapped}
    for name, folder in mapped.items():
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent == folder.resolve(), name


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_rooms_import_only_the_rooms_below_them(room):
    wrong = {}
    for path in sorted((REPO / room).glob("*.py")):
        above = imports_of(path) - MAY_IMPORT[room] - {room}
        if above:
            wrong[path.name] = sorted(above)
    assert wrong == {}, f"{room}/ imports rooms above it"


def test_the_control_plane_uses_only_the_drivers_interface():
    """Any attribute taken from a driver in control/ (a name `drv`, or
    `self.driver(...)`) is a method of driver/interface.py."""
    allowed = set(VolumeDriverCore.__abstractmethods__)
    used = {}
    for path in sorted((REPO / "control").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            is_driver = (isinstance(owner, ast.Name) and owner.id == "drv") or (
                isinstance(owner, ast.Call) and isinstance(owner.func, ast.Attribute)
                and owner.func.attr == "driver")
            if is_driver:
                used.setdefault(node.attr, path.name)
    assert used, "the check found no driver call at all"
    assert {a: f for a, f in used.items() if a not in allowed} == {}


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("shareblock 0.")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "multi-attach" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "shareblock.cli.main", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("shareblock ")


def test_nothing_but_the_adapter_needs_cinder():
    code = ("import sys, shareblock.driver.volume_driver, shareblock.driver.pools, "
            "shareblock.driver.options, shareblock.targets.factory, shareblock.targets.agent; "
            "assert not [m for m in sys.modules if m == 'cinder' or m.startswith('cinder.')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unit_tests_import_no_hardware_helpers():
    """Unit tests run anywhere, in seconds: what they share with the hardware suite
    lives beside both (tests/crashlib.py, the crash matrix) or in tests/unit/fakes.py."""
    wrong = {}
    for path in sorted((REPO / "tests" / "unit").glob("*.py")):
        hardware = sorted(m for m in modules_imported(path)
                          if m.startswith(("tests.hardware", "tests.cinder")))
        if hardware:
            wrong[path.name] = hardware
    assert wrong == {}
