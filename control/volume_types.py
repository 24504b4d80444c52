"""Volume types and their extra specs, as cinderclient's type-* commands."""
import re
import uuid

from shareblock.control import db as db_mod
from shareblock.control.errors import Conflict, InvalidInput
from shareblock.control.records import now

TYPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,254}$")
SPEC_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.-]{0,254}$")
SPEC_VALUE_RE = re.compile(r"^[\x20-\x7e]{0,255}$")


class VolumeTypes:
    @staticmethod
    def _type_view(row) -> dict:
        return {"id": row["id"], "name": row["name"],
                "extra_specs": db_mod.loads(row["extra_specs"]),
                "is_public": True}

    def type_create(self, name: str) -> dict:
        self.authorize("volume_extension:types_manage")
        if not isinstance(name, str) or not TYPE_NAME_RE.match(name):
            raise InvalidInput(f"volume type name {name!r}: 1-255 of letters, digits, "
                               "space . _ : - starting with a letter or digit")
        with self.db.transaction() as db:
            if db.execute("SELECT 1 FROM volume_types WHERE name=?", (name,)).fetchone():
                raise Conflict(f"volume type {name!r} already exists")
            tid = str(uuid.uuid4())
            db.execute("INSERT INTO volume_types VALUES (?,?,?,?)", (tid, name, "{}", now()))
        return self.type_show(tid)

    def type_show(self, ref: str) -> dict:
        return self._type_view(self._type_row(ref))

    def type_list(self) -> list[dict]:
        return [self._type_view(r) for r in self.db.query(
            "SELECT * FROM volume_types ORDER BY name")]

    def type_key(self, ref: str, action: str, specs: dict | list) -> dict:
        """`set` key=value pairs or `unset` keys, as cinderclient's type-key."""
        self.authorize("volume_extension:types_manage")
        if action not in ("set", "unset"):
            raise InvalidInput("type-key action must be set or unset")
        keys = list(specs)
        for key in keys:
            if not isinstance(key, str) or not SPEC_KEY_RE.match(key):
                raise InvalidInput(f"extra spec key {key!r} is not valid")
        if action == "set":
            for key, value in specs.items():
                if not isinstance(value, str) or not SPEC_VALUE_RE.match(value):
                    raise InvalidInput(f"extra spec {key}: value must be printable text")
            guard = specs.get("shareblock:fs_guard")
            if guard is not None and guard not in ("enforce", "warn", "off"):
                raise InvalidInput("shareblock:fs_guard must be enforce, warn or off")
        with self.db.transaction() as db:
            row = self._type_row(ref, db)
            current = db_mod.loads(row["extra_specs"])
            if action == "set":
                current.update(specs)
            else:
                for key in keys:
                    current.pop(key, None)
            db.execute("UPDATE volume_types SET extra_specs=? WHERE id=?",
                       (db_mod.dumps(current), row["id"]))
        return self.type_show(row["id"])

    def type_delete(self, ref: str) -> None:
        self.authorize("volume_extension:types_manage")
        with self.db.transaction() as db:
            row = self._type_row(ref, db)
            if db.execute("SELECT 1 FROM volumes WHERE volume_type_id=?", (row["id"],)).fetchone():
                raise Conflict(f"volume type {row['name']!r} is in use")
            db.execute("DELETE FROM volume_types WHERE id=?", (row["id"],))
