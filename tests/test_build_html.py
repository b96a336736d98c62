"""tools/build_html.py without a browser: the offline check catches every way a page could fetch from the network,
the vendored files exist where the pages point, the index lists what was built."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("build_html", ROOT / "tools" / "build_html.py")
B = importlib.util.module_from_spec(spec)
spec.loader.exec_module(B)


@pytest.mark.parametrize("page", [
    '<script src="https://cdn.example.org/x.js"></script>',
    "<link rel='stylesheet' href='http://cdn.example.org/x.css'>",
    "<style>@font-face { src: url(https://fonts.example.org/f.woff) }</style>",
    "<script type=module>import mermaid from 'https://cdn.example.org/m.mjs';</script>",
    '<img alt="x" src="https://example.org/p.png">',
])
def test_check_offline_rejects_remote_resources(page, tmp_path):
    with pytest.raises(RuntimeError, match="from the network"):
        B._check_offline(page, tmp_path / "p.html")


def test_check_offline_allows_local_files_and_plain_links(tmp_path):
    B._check_offline('<script src="_static/requirejs/require.js"></script><a href="https://arxiv.org/abs/1706.03762">'
                     'paper</a><img src="data:image/png;base64,AAAA">', tmp_path / "p.html")


def test_static_urls_point_into_the_vendored_files():
    for url in B.STATIC_URLS.values():
        package_path = url.split("?")[0].removeprefix("_static/")
        # a file inside a vendored part, or (reveal's URL prefix) the package folder itself
        assert package_path in B.VENDOR or any(package_path.startswith(f"{pkg}/{part}")
                                               for pkg, parts in B.VENDOR.items() for part in parts), url
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for pkg in B.VENDOR:
        assert f"node_modules/{pkg}" in lock["packages"], f"{pkg} is not pinned in package-lock.json"


def test_index_page_and_titles():
    rows = [("l04_sgd_momentum", "Lecture 4 — SGD & <momentum>", "l04_sgd_momentum.html", 9.4)]
    page = B._index_page("site", rows)
    assert '<a href="l04_sgd_momentum.html">Lecture 4 — SGD &amp; &lt;momentum&gt;</a>' in page
    assert "<td>4</td>" in page and "9 s" in page
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("intro"),
                                         nbformat.v4.new_markdown_cell("# Lecture 9 — Detection\n\ntext")])
    assert B._title(nb) == "Lecture 9 — Detection"
    assert B.lecture_stems()[0] == "l01_why_deep_learning"


def test_command_line_rejects_unknown_lectures(capsys):
    with pytest.raises(SystemExit):
        B.main(["slides", "l99_nope"])
    assert "unknown lectures" in capsys.readouterr().err
