"""Build the executed lectures into offline reveal.js slide decks and a static course site.

    python tools/build_html.py slides [STEM ...]     -> build/slides/<stem>.slides.html + build/slides/index.html
    python tools/build_html.py site   [STEM ...]     -> build/site/<stem>.html + build/site/index.html

(``make slides`` / ``make site`` call these.) Each lecture is executed once with nbclient into
``build/executed/`` and reused until the notebook, its solutions module or ``utils/`` change. Everything the
pages load — reveal.js, MathJax 2, require.js, jQuery, the static widget renderer — is copied from
``node_modules/`` (installed from ``package.json`` + ``package-lock.json`` by ``npm ci``) into ``_static/`` beside
the HTML, so a deck opened from disk renders with no network. The templates in ``tools/templates`` only drop
nbconvert's Mermaid loader (an ES module from a CDN, unused by the course).

Cells whose ``slideshow.slide_type`` is ``"notes"`` become speaker notes (press ``s`` in a deck).
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LECTURES = ROOT / "lectures"
BUILD = ROOT / "build"
EXECUTED = BUILD / "executed"
NODE = ROOT / "node_modules"
TEMPLATES = Path(__file__).resolve().parent / "templates"

# what to copy out of node_modules (source → name under _static/), and what to leave behind
VENDOR = {
    # only the theme we use: most of reveal's other themes @import Google Fonts
    "reveal.js": ["dist/reveal.js", "dist/reveal.css", "dist/reset.css", "dist/theme/white.css",
                  "dist/theme/fonts/source-sans-pro", "plugin/notes"],
    "mathjax": ["MathJax.js", "config", "extensions", "jax/input/TeX", "jax/output/CommonHTML", "jax/element",
                "fonts/HTML-CSS/TeX/woff", "localization/en"],
    "requirejs": ["require.js"],
    "jquery": ["dist/jquery.min.js"],
    "@jupyter-widgets/html-manager": ["dist"],
}
STATIC_URLS = {
    "reveal_url_prefix": "_static/reveal.js",
    "mathjax_url": "_static/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "require_js_url": "_static/requirejs/require.js",
    "jquery_url": "_static/jquery/dist/jquery.min.js",
    "widget_renderer_url": "_static/@jupyter-widgets/html-manager/dist/embed-amd.js",
}


def lecture_stems() -> list[str]:
    return sorted(p.stem for p in LECTURES.glob("l[0-9][0-9]_*.ipynb"))


def _fingerprint(stem: str) -> str:
    """Hash of everything an executed notebook depends on: itself, its solutions module and utils/."""
    h = hashlib.sha256()
    files = [LECTURES / f"{stem}.ipynb", ROOT / "solutions" / f"{stem}.py", *sorted((ROOT / "utils").rglob("*.py"))]
    for f in files:
        if f.exists():
            h.update(f.read_bytes())
    return h.hexdigest()


def execute(stem: str) -> tuple[str, float]:
    """Run lectures/<stem>.ipynb top to bottom (cwd lectures/), save it with outputs and widget state to
    build/executed/. Skipped when an up-to-date copy exists. Returns (stem, seconds the run took)."""
    from nbclient import NotebookClient

    out, meta = EXECUTED / f"{stem}.ipynb", EXECUTED / f"{stem}.json"
    fingerprint = _fingerprint(stem)
    if out.exists() and meta.exists():
        record = json.loads(meta.read_text())
        if record.get("fingerprint") == fingerprint:
            return stem, record["seconds"]
    nb = nbformat.read(LECTURES / f"{stem}.ipynb", as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(LECTURES)}}).execute()
    seconds = round(time.perf_counter() - t0, 1)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    meta.write_text(json.dumps({"fingerprint": fingerprint, "seconds": seconds}))
    print(f"executed {stem} in {seconds:.1f} s", flush=True)
    return stem, seconds


def execute_all(stems: list[str], workers: int) -> dict[str, float]:
    # one thread per kernel: two kernels on two cores must not fight over threads
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(execute, stems))


def copy_static(dest: Path) -> None:
    """Copy the front-end files the pages load into dest/_static (from node_modules, see package.json)."""
    if not NODE.exists():
        sys.exit("node_modules/ is missing: run `npm ci` (make slides / make site do it for you)")
    static = dest / "_static"
    for package, parts in VENDOR.items():
        for part in parts:
            src, dst = NODE / package / part, static / package / part
            if not src.exists():
                sys.exit(f"{src} is missing: run `npm ci` to install the versions in package-lock.json")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
    for css in static.rglob("*.css"):  # a stylesheet can fetch too (@import of web fonts)
        _check_offline(css.read_text(encoding="utf-8", errors="replace"), css)


def _exporter(kind: str):
    from nbconvert import HTMLExporter, SlidesExporter
    from traitlets.config import Config

    c = Config()
    name = "SlidesExporter" if kind == "slides" else "HTMLExporter"
    for key, value in STATIC_URLS.items():
        setattr(c[name], key, value)
    c[name].extra_template_basedirs = [str(TEMPLATES)]
    if kind == "slides":
        c.SlidesExporter.template_name = "course_reveal"
        c.SlidesExporter.reveal_scroll = True  # long code cells scroll instead of overflowing the slide
        c.SlidesExporter.reveal_theme = "white"  # nbconvert's default theme ("simple") imports Google Fonts
        return SlidesExporter(config=c)
    c.HTMLExporter.template_name = "course_lab"
    return HTMLExporter(config=c)


def _title(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return ""


def _check_offline(page: str, path: Path) -> None:
    """Fail the build if a page would fetch anything from the network (scripts, styles, fonts, images)."""
    tags = r"(?:script|img|iframe|source|video|audio|embed)"
    remote = re.findall(tags + r"""\b[^>]*?\ssrc\s*=\s*["'](https?://[^"']+)""", page)
    remote += re.findall(r"""<link\b[^>]*?\shref\s*=\s*["'](https?://[^"']+)""", page)
    remote += re.findall(r"""url\(\s*["']?(https?://[^)"']+)""", page)
    remote += re.findall(r"""import\s+[^;]*?from\s+["'](https?://[^"']+)""", page)
    remote += re.findall(r"""@import\s+["'](https?://[^"']+)""", page)
    if remote:
        raise RuntimeError(f"{path} would load {remote[:3]} from the network")


def build(kind: str, stems: list[str], workers: int = 2) -> Path:
    out_dir = BUILD / kind
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_static(out_dir)
    seconds = execute_all(stems, workers)
    exporter = _exporter(kind)
    rows = []
    for stem in stems:
        nb = nbformat.read(EXECUTED / f"{stem}.ipynb", as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": stem}})
        page = out_dir / (f"{stem}.slides.html" if kind == "slides" else f"{stem}.html")
        _check_offline(body, page)
        page.write_text(body, encoding="utf-8")
        rows.append((stem, _title(nb), page.name, seconds[stem]))
    index = out_dir / "index.html"
    index.write_text(_index_page(kind, rows), encoding="utf-8")
    print(f"wrote {len(rows)} {'decks' if kind == 'slides' else 'pages'} and {index.relative_to(ROOT)}")
    return index


def _index_page(kind: str, rows: list[tuple[str, str, str, float]]) -> str:
    what = "slides" if kind == "slides" else "lectures, executed"
    lines = "\n".join(
        f'<tr><td>{int(stem[1:3])}</td><td><a href="{html.escape(page)}">{html.escape(title or stem)}</a></td>'
        f"<td><code>{html.escape(stem)}.ipynb</code></td><td>{sec:.0f} s</td></tr>"
        for stem, title, page, sec in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Deep Learning — {what}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}}
th{{background:#f4f4f4}}</style></head>
<body><h1>Deep Learning — from neural nets to frontier models</h1>
<p>The course's {what}. Open a notebook in JupyterLab (<code>make lab</code>) to run it and solve the exercises;
runtimes are this build's execution times (one CPU thread per lecture).</p>
<table><thead><tr><th>#</th><th>Lecture</th><th>Notebook</th><th>Runtime</th></tr></thead>
<tbody>
{lines}
</tbody></table></body></html>
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["slides", "site"])
    parser.add_argument("stems", nargs="*", help="lectures to build (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="notebooks executed in parallel")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stems) - set(lecture_stems()))
    if unknown:
        parser.error(f"unknown lectures {unknown}; choose from {lecture_stems()}")
    build(args.kind, args.stems or lecture_stems(), args.workers)


if __name__ == "__main__":
    main()
