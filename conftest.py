"""Notebook timing for the nbval run: seconds and peak kernel RSS per lecture, written to
build/notebook_timings.csv and printed at the end of the session (works with pytest-xdist too).

Each executed notebook cell's report carries the kernel's peak RSS so far (Linux: VmHWM of the kernel process)
in ``user_properties``; the controlling process sums the durations per notebook and keeps the max RSS.
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
_seconds: dict[str, float] = defaultdict(float)
_rss_mb: dict[str, float] = defaultdict(float)
_failed: set[str] = set()

# the browser tests need Chromium and the built slides/site: `make test-browser` runs them, `make test` does not
if os.environ.get("DL_COURSE_BROWSER_TESTS") != "1":
    collect_ignore = ["tests/browser"]


def _kernel_peak_rss_mb(item: pytest.Item) -> float | None:
    """Peak resident memory of the notebook's kernel process, in MB (None where it cannot be read)."""
    kernel = getattr(item.parent, "kernel", None)
    try:
        pid = kernel.km.provisioner.pid
    except AttributeError:
        return None
    status = Path(f"/proc/{pid}/status")
    if status.exists():  # Linux: the high-water mark, not just the current size
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if item.nodeid.split("::")[0].endswith(".ipynb") and call.when == "call":
        rss = _kernel_peak_rss_mb(item)
        if rss is not None:
            outcome.get_result().user_properties.append(("kernel_peak_rss_mb", rss))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if not path.endswith(".ipynb"):
        return
    _seconds[path] += report.duration
    for key, value in report.user_properties:
        if key == "kernel_peak_rss_mb":
            _rss_mb[path] = max(_rss_mb[path], value)
    if report.failed:
        _failed.add(path)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _seconds or hasattr(config, "workerinput"):  # only the controller writes the report
        return
    out = ROOT / "build" / "notebook_timings.csv"
    out.parent.mkdir(exist_ok=True)
    rows = [(Path(p).stem, round(_seconds[p], 1), round(_rss_mb.get(p, 0.0)), "failed" if p in _failed else "ok")
            for p in sorted(_seconds)]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lecture", "seconds", "peak_rss_mb", "status"])
        writer.writerows(rows)
    tr = terminalreporter
    tr.section("notebook timings (build/notebook_timings.csv)")
    tr.write_line(f"{'lecture':<36} {'seconds':>8} {'peak MB':>8}  status")
    for lecture, seconds, rss, status in rows:
        tr.write_line(f"{lecture:<36} {seconds:>8.1f} {rss:>8.0f}  {status}")
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    tr.write_line(f"{len(rows)} notebooks, {sum(r[1] for r in rows):.0f} s in total (OMP_NUM_THREADS={threads})")
