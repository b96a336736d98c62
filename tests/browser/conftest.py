"""Browser tests (``make test-browser``): Debian's Chromium driven by Playwright through pytest-playwright's
fixtures. Not part of ``make test``: the root conftest.py skips collecting this folder unless
DL_COURSE_BROWSER_TESTS=1 (the Makefile target sets it after building the slides and the site)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("DL_COURSE_CHROMIUM", "/usr/bin/chromium")


def pytest_configure(config):
    # pytest-base-url (pulled in by pytest-playwright) still defines a fixture the old way; not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:Session-scoped fixtures defined as instance methods")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch the system Chromium (browser downloads are impossible offline), headless, with nothing that phones
    home. Playwright gives every launch a fresh temporary user-data dir."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium "
                    "(make test-browser does: apt-get install chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def built(path: Path, target: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make {target}` first (make test-browser does)")
    return path


@pytest.fixture
def offline_requests(page):
    """Every request the page makes; anything not served from disk (file:, data:, blob:) is recorded and aborted,
    so a test can assert that nothing left the machine."""
    remote: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            remote.append(url)
            route.abort()

    page.route("**/*", guard)
    return remote


def which(cmd: str) -> str:
    path = shutil.which(cmd, path=str(ROOT / ".venv" / "bin")) or shutil.which(cmd)
    if path is None:
        pytest.fail(f"{cmd} not found")
    return path
