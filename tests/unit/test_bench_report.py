"""The benchmark's report: targets, lower bounds and the data table from a results document."""
from shareblock.bench import report


def series(ms: float, n: int = 3) -> dict:
    return {"admit": [ms / 1e3] * n, "revoke": [ms / 2e3] * n}


def results() -> dict:
    sizes = (1, 500, 1000)
    lio = {"floor": {n: series(0.5) for n in sizes},
           "shareblock": {n: series(1.2) for n in sizes},
           "shareblock full path": {1: series(10), 500: series(11), 1000: series(16)},
           "targetcli": {1: series(8000, 1), 500: series(55000, 1),
                         1000: {"admit": [90.0], "revoke": [], "stopped": True}}}
    return {"environment": {"kernel": "6.12", "cpu": "x", "cpus": 2, "memory_mb": 1,
                            "emulated": True, "date": "d", "size": "full", "elapsed_s": 1.0},
            "admit": {"lio": lio},
            "restore": {"exports": 500, "hosts": 4,
                        "lio": {"floor": 15.0, "shareblock": 19.0, "shareblock-restore": 31.0,
                                "targetctl restore": 90.0, "targetctl stopped": True},
                        "nvmet": {"floor + dm view": 20.0, "shareblock": 30.0,
                                  "shareblock-restore": 33.0}},
            "data": {"lio": {"seq read": {"one": [100.0, 90.0, 110.0],
                                          "two": [95.0, 99.0, 88.0]}}},
            "guard": {"probe blank": [0.02], "probe ext4": [0.02], "build": 200.0,
                      "volumes": 500, "pass": 25.0, "demoted": 1,
                      "full path at scale": series(60),
                      "fence": {"fence": [0.05, 0.04, 0.06], "unfence": [0.03]},
                      "fence list": 2.0,
                      "scrape": {"50": [0.1, 0.12], "500": [0.9]},
                      "full path at scale, scraped": series(66)}}


def test_targets_read_the_figures():
    checks = {what: (ok, figures) for what, ok, figures in report.targets(results())}
    assert checks["LIO iSCSI: admit within 3x of the floor"][0] is True
    assert checks["LIO iSCSI: admit flat within 20% from 1 to 1000 exports"][0] is True
    ok, figures = checks["LIO iSCSI: admit 10x faster than targetcli at 500 exports"]
    assert ok and figures == "45833x faster"
    assert checks["LIO iSCSI: shareblock of 500 x 4 within 2x of the floor"] == (
        True, "1.27x (19.00 s vs 15.00 s)")
    assert checks["LIO iSCSI: shareblock-restore of 500 x 4 within 2x of the floor"][0] is False
    assert checks["nvmet NVMe/TCP: shareblock-restore of 500 x 4 within 2x of the floor + "
                  "dm view"] == (True, "1.65x (33.00 s vs 20.00 s)")
    assert checks["LIO iSCSI: full-path admit (attachment-create / -delete) within 1.5x from "
                  "1 to 1000 volumes"] == (False, "largest / smallest median 1.60x "
                                                  "(10.0..16.0 ms); full path / floor across "
                                                  "sizes 20..32x (60%)")
    ok, figures = checks["LIO iSCSI: full-path admit within 10x of the target-only admit at "
                         "every size"]
    assert (ok, figures) == (False, "full path / target only by volumes: 8.33x, 9.17x, 13.3x")
    ok, figures = checks["data path two hosts / one at least 0.95"]
    assert ok is True and figures == "lowest ratio 0.950"  # 95 / 100 (medians)


def test_a_stopped_command_is_shown_as_a_lower_bound():
    text = report.markdown(results())
    assert "| targetcli | 8000 (1) | 55000 (1) | >90000 (1) |" in text
    assert "| shareblock / targetcli | 0.00015 | 2.18e-05 | <1.33e-05 |" in text
    assert "| targetctl restore | >90.00 |" in text


def test_the_data_table_shows_the_band_of_adjacent_pairs():
    row = report.data_table(results()["data"]).splitlines()[-1]
    # pairs: 95/100, 99/90, 88/110
    assert row == "| LIO iSCSI | seq read | 100.0 | 95.0 | 0.950 | 0.80..1.10 |"


def test_the_guard_table_shows_fencing_at_its_scale():
    text = report.markdown(results())
    assert "| fence / unfence one node (one volume) with 500 volumes in the control plane " \
           "| 50.0 / 30.0 ms |" in text
    assert "| fence-list over 1000 nodes | 2.00 s (2.00 ms per node) |" in text


def test_the_guard_table_shows_the_scrape_cost_against_volumes():
    text = report.markdown(results())
    assert "| Prometheus scrape of shareblock-exporter at 50 volumes (100 LIO ACLs) | " \
           "110.0 ms |" in text
    assert "at 500 volumes (1000 LIO ACLs) | 900.0 ms |" in text
    assert "scraped every second |" in text and "(not scraped: " in text
