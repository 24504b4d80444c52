import pytest

from shareblock.targets.configfs import ConfigfsError, Node


def test_operations_are_idempotent(tmp_path):
    root = Node(tmp_path)
    a = (root / "a").create(groups=("g",))
    a.create(groups=("g",))
    assert (tmp_path / "a" / "g").is_dir()
    a.write("attr", "1")
    a.write("attr", 1)
    assert a.read("attr") == "1"
    b = (root / "b").create()
    a.link("to-b", b)
    a.link("to-b", b)
    assert a.links() == {"to-b": tmp_path / "b"}
    a.unlink("to-b")
    a.unlink("to-b")
    b.remove()
    b.remove()
    assert root.children() == ["a"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_names_cannot_escape(tmp_path, name):
    with pytest.raises(ConfigfsError):
        Node(tmp_path) / name


def test_link_to_another_target_is_an_error(tmp_path):
    root = Node(tmp_path)
    a, b, c = (root / "a").create(), (root / "b").create(), (root / "c").create()
    a.link("x", b)
    with pytest.raises(ConfigfsError, match="links elsewhere"):
        a.link("x", c)


def test_secret_write_errors_hide_the_value(tmp_path):
    node = Node(tmp_path) / "missing"
    with pytest.raises(ConfigfsError) as e:
        node.write("password", "hunter2-secret", secret=True)
    assert "hunter2" not in str(e.value)


def test_children_named_finds_a_prefix_without_a_pass_over_every_entry(tmp_path):
    folder = (Node(tmp_path) / "subsystems").create()
    names = ["nqn:vol-1", "nqn:vol-1:h-a", "nqn:vol-10", "nqn:vol-2", "nqn:vol-1:h-b",
             "other:vol-1"]
    for name in names:
        (folder / name).create()
    assert folder.children_named("nqn:vol-1") == ["nqn:vol-1", "nqn:vol-10",
                                                   "nqn:vol-1:h-a", "nqn:vol-1:h-b"]
    assert folder.children_named("nqn:vol-1:h-") == ["nqn:vol-1:h-a", "nqn:vol-1:h-b"]
    assert folder.children_named("nqn:") == sorted(n for n in names if n.startswith("nqn:"))
    assert folder.children_named("nqn:vol-3") == []
    assert (Node(tmp_path) / "absent").children_named("x") == []
