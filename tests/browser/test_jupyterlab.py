"""JupyterLab in Chromium: open a lecture, Run All, no errors, move a slider and see the plot change."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from .conftest import ROOT, which

LECTURE = "l04_sgd_momentum"  # fast (≈ 10 s) and has float sliders driving a plot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A token-less JupyterLab on a free localhost port serving a *copy* of the lecture (Lab autosaves, and the
    committed notebook must stay clean). Stopped when the test ends, pass or fail."""
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(ROOT / "lectures" / f"{LECTURE}.ipynb", root)
    # render every cell (JupyterLab 4 only renders the cells in view by default) and ask for no news
    settings = tmp_path / ".settings"
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false"}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [which("jupyter"), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         "--ServerApp.allow_root=True", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         f"--LabApp.user_settings_dir={settings}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # a loaded CI machine can take a while to import the server
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _plot_src(page) -> str:
    """The image the widget's update function drew (the display output right below the controls)."""
    return page.locator(".jp-OutputArea:has(.widget-slider) img").first.get_attribute("src")


@pytest.mark.timeout(420)
def test_run_all_then_slider_redraws_the_plot(lab, page, screenshots):
    url, folder = lab
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{LECTURE}.ipynb")
    page.locator(".jp-Notebook").wait_for()
    # some setups ask which kernel to start: take the notebook's own (python3)
    page.wait_for_timeout(2000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.get_by_text("Select Kernel").count():
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    # the status bar reads "Python 3 (ipykernel) | Idle" once the kernel is up
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)

    page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
    page.locator(".lm-Menu").get_by_text("Run All Cells", exact=True).click()

    # every code cell gets a number in its prompt once it has run; [*] means queued or running
    n_code = len([c for c in json.loads((folder / f"{LECTURE}.ipynb").read_text())["cells"]
                  if c["cell_type"] == "code"])
    deadline = time.time() + 300
    while True:
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        done = [p for p in prompts if p.strip().startswith("[") and p.strip()[1:-2].isdigit()]
        if len(done) == n_code and not any("*" in p for p in prompts):
            break
        assert time.time() < deadline, f"Run All did not finish: {len(done)}/{n_code} cells ran"
        time.sleep(1)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()

    # no error output: save the notebook and read its outputs (stderr warnings and tqdm bars are not errors)
    page.keyboard.press("Control+s")
    deadline = time.time() + 30
    while True:
        cells = json.loads((folder / f"{LECTURE}.ipynb").read_text())["cells"]
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
        if outputs:
            break
        assert time.time() < deadline, "the notebook was not saved"
        time.sleep(0.5)
    errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
    assert not errors, errors
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0

    # move the first slider with the keyboard and wait for the plot to be redrawn
    before = _plot_src(page)
    assert before and before.startswith("data:image/png")
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    deadline = time.time() + 60
    while _plot_src(page) == before:
        assert time.time() < deadline, "moving the slider did not redraw the plot"
        time.sleep(0.5)
    page.locator(".jp-OutputArea:has(.widget-slider)").first.screenshot(path=screenshots / "lab_widget.png")
    page.screenshot(path=screenshots / "lab_run_all.png")
