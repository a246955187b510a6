"""Smoke tests of the benchmarks: each one runs with tiny sizes, as the command a user types,
prints its table and exits 0. (The figures themselves mean nothing at these sizes.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str, timeout: float = 60.0) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCHMARKS.parent,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith("machine: "), proc.stdout[:500]
    return proc.stdout


def table_rows(out: str) -> list[list[str]]:
    """The rows of every Markdown table printed (header rows included, rule lines left out)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|") and not line.startswith("|-")
    ]


def test_table_rows_helper() -> None:
    out = "x\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"
    assert table_rows(out) == [["a", "b"], ["1", "2"], ["3", "4"]]


def test_bench_rate_smoke() -> None:
    out = run("bench_rate.py", "--calls", "40")
    assert "| limiter" in out
    rows = table_rows(out)
    commands = {row[1] for row in rows}
    assert {"group_get_key_values", "get_key_values", "get_group_attr"} <= commands
    assert any(row[0].startswith("AsyncLimiter(200, 1)") for row in rows)
    # the SDK's limiter never lets more than the rate into one second, even in a tiny run
    sdk = [row for row in rows if row[0].startswith("SDK")]
    assert len(sdk) == 4
    assert all(int(row[3]) <= 200 for row in sdk)


def test_bench_redis_limiter_smoke() -> None:
    """Two worker processes share a RedisLimiter budget of 10/s against the emulator."""
    out = run(
        "bench_redis_limiter.py",
        *("--seconds", "1.5", "--processes", "2", "--tasks", "2", "--rate", "10"),
        *("--limiters", "redis"),
    )
    assert "\nRedisLimiter, 2 process(es)\n" in out, out
    rows = {
        name.strip(): value.strip()
        for name, _, value in (line.rpartition("  ") for line in out.splitlines())
        if name.startswith("  ")
    }
    busiest, limit = rows["busiest sliding second (admissions)"].split(" ", 1)
    assert 1 <= int(busiest) <= 10 and limit == "(<= 10)", out
    assert int(rows["max arrivals possible in any sliding second"]) <= 10, out
    assert rows["60007 answers from the emulator"] == "0", out
    assert all(int(n) > 0 for n in rows["per process"].split(" / ")), out  # both shared it


def test_bench_overhead_smoke() -> None:
    out = run("bench_overhead.py", "--rounds", "1", "--calls", "16", "--sizes", "3,20")
    rows = table_rows(out)
    assert rows[0][0] == "items/page"
    assert [row[0] for row in rows[1:]] == ["3", "20"]
    assert "goal (sdk/raw >= 0.90)" in out


def test_bench_instructions_smoke() -> None:
    # --native: the measured children run without valgrind (each checks it read every pair).
    out = run("bench_instructions.py", "--native", "--calls", "5", "--sizes", "7", "--kinds", "sdk")
    rows = table_rows(out)
    assert rows[0][0] == "items/page"
    assert [row[0] for row in rows[1:]] == ["7"]
    assert "native run, no counts" in out


def test_bench_bulk_smoke() -> None:
    out = run("bench_bulk.py", "--messages", "15", "--keys-max", "300", "--concurrency", "4")
    rows = table_rows(out)
    assert rows[0][0] == "messages"
    messages, _pairs, pages, *_rest = rows[1]
    assert messages == "15"
    answered, computed = pages.replace("(", "").replace(")", "").split()
    assert answered == computed  # every page the walk needed, none retried
    assert rows[1][7] == "0"  # no 60007


@pytest.mark.parametrize("pullers", ["gather,workers,cli"])
def test_bench_memory_smoke(pullers: str) -> None:
    out = run(
        "bench_memory.py",
        "--targets",
        "10,30",
        "--messages",
        "10",
        "--keys-max",
        "30",
        "--concurrency",
        "4",
        "--pullers",
        pullers,
    )
    rows = table_rows(out)
    assert rows[0][0] == "puller"
    assert [row[0] for row in rows[1:]] == ["gather", "gather", "workers", "workers", "cli", "cli"]
    assert all(row[-1].startswith("ok") for row in rows[1:]), out
