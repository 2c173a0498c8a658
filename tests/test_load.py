"""The CI version of the load and fault harness (``benchmarks/load_harness.py``), short.

3 visitors for 40 s against a real ``python app.py`` (the shipped tiny model) on loopback:
page and API analyses, chats with a follow-up turn, streams closed midway and the hostile
requests, after the sequential answers and one warm-up round. Then the issue's targets, one
test each. Marked ``load``: ``pytest -m "not load"`` leaves it out; it takes about 2 to 3
minutes on a 2-core machine, and its timeouts are generous for a loaded one. The full run
is ``python benchmarks/load_harness.py --visitors 8 --seconds 180``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import load_harness  # found through the path set above

pytestmark = [pytest.mark.load, pytest.mark.timeout(1800)]

CI_RUN = load_harness.Settings(visitors=3, seconds=40.0, clips=3, visitor_copies=1, request_timeout=240.0,
                               start_timeout=600.0)


@pytest.fixture(scope="module")
def report() -> dict:
    report = load_harness.run_harness(CI_RUN, say=print)
    print(load_harness.readable(report))
    return report


def assert_target(report: dict, key: str, details: object = "") -> None:
    found = next(t for t in report["targets"] if t["id"] == key)
    assert found["passed"], f"{found['name']}: {found['measured']}\n{details}"


def failures_of(report: dict, kinds: tuple[str, ...]) -> list[str]:
    """Each distinct failure of these request kinds, once."""
    return list(dict.fromkeys(f"{f['kind']} [{f['status']}] {f['detail']}" for f in report["failures"]
                              if f["kind"] in kinds))


def test_every_visitor_sent_every_request_kind(report):
    kinds = report["kinds"]
    assert set(kinds) == {*load_harness.VALID_KINDS, *load_harness.HOSTILE_KINDS}
    assert all(row["requests"] >= CI_RUN.visitors for row in kinds.values()), kinds  # the warm-up round at least


def test_no_valid_request_fails(report):
    assert_target(report, "valid_requests", failures_of(report, load_harness.VALID_KINDS)[:10])


def test_the_server_is_alive_and_answering_at_the_end(report):
    assert_target(report, "alive")


def test_answers_under_load_equal_the_sequential_ones(report):
    assert_target(report, "equal_answers", report["mismatches"][:5])


def test_no_file_of_a_visitor_is_left_in_the_temp_folders(report):
    assert_target(report, "no_files_left", report["files_left"][:10])


def test_memory_comes_back_after_the_load(report):
    assert_target(report, "rss", report["rss_mb"])


def test_hostile_requests_get_a_readable_refusal(report):
    assert_target(report, "hostile_refused", failures_of(report, load_harness.HOSTILE_KINDS)[:10])


def test_one_clients_burst_gets_its_share_and_another_client_still_gets_in(report):
    assert_target(report, "fair", report["fairness"])
