"""shareblock-bench: run every scenario in the lab kernel, print the tables, write
the results (JSON, markdown); `--report` then draws the plot and, for the full
size, refreshes BENCHMARKS.md. Run both through `scripts/bench.sh`."""
import argparse
import json
import sys
import time
from pathlib import Path

from shareblock.bench import report, scenarios

# ci: a minute or two, run by the test command so that the benchmark cannot rot
# (no process-per-operation peers: they cost a minute each under emulation);
# smoke: every tool once, a few minutes; full: the published figures (an hour or
# more under emulation: 2,000 volumes per transport are made in the control plane).
SIZES = {
    "ci": dict(exports=[1, 10], fast=2, fast_budget=1.0, least=1, slow=1, slow_budget=0.0,
               slow_sizes=[], slow_revoke_max=0, hosts=[1, 2], restore=(5, 1),
               fio_runtime=1, fio_pairs=1, guard_volumes=1, probes=1),
    "smoke": dict(exports=[1, 10], fast=3, fast_budget=2.0, least=1, slow=1, slow_budget=0.0,
                  slow_sizes=[1], slow_revoke_max=1, hosts=[1, 2], restore=(10, 2),
                  fio_runtime=1, fio_pairs=2, guard_volumes=2, probes=2),
    # Process-per-operation peers cost 8-300 s per command under emulation: one
    # sample each (a command still running after peers.COMMAND_LIMIT is stopped and
    # reported as a lower bound), revoke up to 10 exports; everything else takes
    # several. fio: 4 one/two-host pairs of 1-second runs per job, B on each volume in turn.
    "full": dict(exports=[1, 100, 1000, 2000], fast=15, fast_budget=10.0, least=5, slow=1,
                 slow_budget=0.0, slow_sizes=[1, 100, 1000], slow_revoke_max=10,
                 hosts=[1, 4, 16, 64], restore=(2000, 4), fio_runtime=1, fio_pairs=4,
                 guard_volumes=500, probes=5),
}
SCENARIOS = ("admit", "restore", "data", "scrape", "guard")


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def publish(doc: Path, text: str, plot: Path) -> None:
    """Put the latest full run's tables and plot between BENCHMARKS.md's markers."""
    if not doc.exists():
        return
    page = doc.read_text()
    if BEGIN not in page or END not in page:
        return
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    body = f"\n![admit latency vs existing exports]({plot.as_posix()})\n\n{text}"
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def report_only(path: Path) -> int:
    results = json.loads(path.read_text())
    size = results["environment"]["size"]
    text = report.markdown(results)
    path.with_name(f"results-{size}.md").write_text(text)
    plot = path.with_name(f"admit-{size}.png")
    if "admit" not in results:  # a run of some scenarios: its tables, no plot or page
        print(text)
        return 0
    report.plot(results, str(plot))
    if size == "full":
        publish(Path("BENCHMARKS.md"), text, plot)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shareblock-bench", description=__doc__)
    parser.add_argument("--size", choices=SIZES, default="smoke")
    parser.add_argument("--out", default=None,
                        help="results folder (default: docs/bench for full, .cache/bench else)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--report", metavar="JSON",
                        help="only rewrite the tables and plot from a results file")
    opts = parser.parse_args(argv)
    if opts.report:
        return report_only(Path(opts.report))
    if not Path("/sys/kernel/config/target").is_dir():
        parser.error("no LIO in this kernel: run it in the lab (scripts/bench.sh)")
    size = SIZES[opts.size]
    out = Path(opts.out or ("docs/bench" if opts.size == "full" else ".cache/bench"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {"environment": scenarios.environment() | {"size": opts.size}, "sizes": size}
    lab = scenarios.Lab()
    stem = f"results-{opts.size}"

    def save():  # after every scenario: a run cut short keeps what it measured
        results["environment"]["elapsed_s"] = time.monotonic() - started
        (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")

    if "admit" in opts.only:
        results["admit"], results["hosts"] = scenarios.admit_scaling(lab, size["exports"], size)
        save()
    if "restore" in opts.only:
        results["restore"] = scenarios.restore(lab, *size["restore"])
        save()
    if "data" in opts.only:
        results["data"] = scenarios.data_path(lab, size["fio_runtime"], size["fio_pairs"])
        save()
    if "scrape" in opts.only:  # at the admit scenario's numbers of volumes, before the
        # guard's volumes fill configfs (the peers walk all of it)
        results["scrape"] = scenarios.scrape(lab, size["exports"], size["probes"])
        save()
    if "guard" in opts.only:
        results["guard"] = scenarios.guard(lab, size["guard_volumes"], size["probes"])
    save()
    text = report.markdown(results)
    (out / f"{stem}.md").write_text(text)
    print("\n" + text, flush=True)
    # The plot (matplotlib) is drawn by `--report` outside the lab: importing it
    # under emulation costs minutes.
    print(f"results: {out}/{stem}.json, {stem}.md; plot and BENCHMARKS.md: "
          f"shareblock-bench --report {out}/{stem}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
