"""Tables for people, JSON for scripts (Cinder's field names), secrets masked."""
import json

from shareblock.control.records import moment

SECRET_KEYS = {"auth_password", "dhchap_secret", "dhchap_ctrl_secret",
               "discovery_auth_password"}
MASK = "********"


def mask(value, show_secrets: bool = False):
    if show_secrets:
        return value
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_KEYS and v else mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def as_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def cell(value) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) and "attachment_id" in v
                                                 for v in value):
        # a volume's attachments, as a person reads them (JSON keeps every field)
        return ", ".join(f"{a.get('host_name') or a['attachment_id'][:8]} {a['attach_mode']} "
                         f"{a['attach_status']}" for a in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


TIME_FIELDS = ("at", "fenced_at", "created_at", "updated_at", "attached_at")


def local_time(stamp):
    """A state timestamp (ISO 8601, UTC, no zone) as this machine's local time, to
    the second, with its zone: what a terminal reader wants. Anything else as is."""
    when = moment(stamp)
    return stamp if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def localized(rows: list[dict]) -> list[dict]:
    return [{k: local_time(v) if k in TIME_FIELDS else v for k, v in r.items()}
            for r in rows]


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    def fmt(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"
    out = [line, fmt(columns), line, *(fmt(row) for row in cells), line]
    return "\n".join(out)


def properties(item: dict) -> str:
    rows = [{"Property": k, "Value": v} for k, v in item.items()]
    return table(rows, ["Property", "Value"])


def reservation(view: dict) -> str:
    """A volume's reservation: who holds it and how, then each registration."""
    holder = view.get("holder") or {}
    summary = {"volume_id": view.get("volume_id"), "exported": view.get("exported"),
               "holder": holder.get("host"), "type": view.get("type_name"),
               "aptpl": view.get("aptpl"), "generation": view.get("generation")}
    rows = [{**r, "holds": "yes" if (r.get("host"), r.get("isid")) ==
             (holder.get("host"), holder.get("isid")) else ""}
            for r in view.get("registrations") or []]
    return properties(summary) + "\n" + table(rows, ["host", "isid", "key", "holds"])
