"""Render a reliability run's figures (JSON lines from the `report` fixture and the
hostile-input tally) as RELIABILITY.md's table.

    python -m tests.hardware.reliability.table REPORT.jsonl [--write RELIABILITY.md]

Without --write the table is printed. A scenario reported twice (a rerun) keeps
its last figures. Exit status 1 when anything was lost or a scenario is missing
its figures, so the script that runs the suite fails loudly.
"""
import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"

# Sections of the table, by the scenario's test name.
GROUPS = [
    ("Faults", ("crash_point", "reboot", "unreachable", "pool")),
    ("Races and load", ("racing", "storm", "writers")),
    ("Security", ("secrets", "strangers", "ssh_paths", "open_doors")),
    ("Hostile input", ("hostile input",)),
]


def group_of(scenario: str) -> str:
    for title, keys in GROUPS:
        if any(k in scenario for k in keys):
            return title
    return "Other"


def load(path: Path) -> list[dict]:
    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            rows[entry["scenario"]] = entry
    return list(rows.values())


def _when(rows: list[dict]) -> str:
    stamps = sorted(r["when"] for r in rows)
    return f"{stamps[0]} to {stamps[-1]}" if stamps else "-"


def markdown(rows: list[dict]) -> str:
    modes = sorted({r["mode"] for r in rows})
    out = [f"Mode: {', '.join(modes)}; run {_when(rows)} (UTC).", ""]
    total_tried = sum(r["tried"] for r in rows)
    total_lost = sum(r["lost"] for r in rows)
    for title, _ in GROUPS + [("Other", ())]:
        mine = [r for r in rows if group_of(r["scenario"]) == title]
        if not mine:
            continue
        out += [f"**{title}**", "", "| scenario | tried | survived | lost | of what |",
                "|---|---|---|---|---|"]
        for r in sorted(mine, key=lambda r: r["scenario"]):
            lost = f"**{r['lost']}**" if r["lost"] else "0"
            out.append(f"| `{r['scenario']}` | {r['tried']} | {r['survived']} | {lost} "
                       f"| {r['unit']} |")
        out.append("")
    crash = [r for r in rows if isinstance(r.get("operations"), dict)]
    if crash:
        out += ["**Crash points by operation** (step at which the process was killed)", "",
                "| transport | operation | points | tried | converged |", "|---|---|---|---|---|"]
        for r in crash:
            for op, fig in sorted(r["operations"].items()):
                out.append(f"| {r.get('protocol', '-')} | {op} | {fig['points']} "
                           f"| {fig['tried']} | {fig['converged']} |")
        out.append("")
    out.append(f"In all: {len(rows)} scenarios, {total_tried} trials, "
               f"**{total_lost} lost**.")
    return "\n".join(out) + "\n"


def publish(doc: Path, text: str) -> None:
    page = doc.read_text()
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    p.add_argument("--write", type=Path, metavar="RELIABILITY.md")
    opts = p.parse_args(argv)
    if not opts.report.exists():
        print(f"{opts.report}: no figures (did the suite run?)", file=sys.stderr)
        return 1
    rows = load(opts.report)
    text = markdown(rows)
    if opts.write:
        publish(opts.write, text)
    print(text)
    return 1 if not rows or any(r["lost"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
