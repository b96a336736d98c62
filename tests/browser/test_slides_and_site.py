"""The built slide decks and course site, opened from disk in Chromium: slides step, math renders, plots load,
and no request leaves the machine."""
from __future__ import annotations

import pytest

from .conftest import ROOT, built

SLIDES = ROOT / "build" / "slides"
SITE = ROOT / "build" / "site"
DECK = "l04_sgd_momentum"  # a deck with LaTeX on its slides


@pytest.mark.timeout(120)
def test_slide_deck_steps_and_renders_math_offline(page, offline_requests, screenshots):
    deck = built(SLIDES / f"{DECK}.slides.html", "slides")
    page.goto(deck.as_uri())
    # reveal.js is loaded through require.js (no global Reveal): it marks the deck .ready and the URL hash tracks
    # the current slide ("#/3" or "#/3/1")
    page.locator(".reveal.ready").wait_for(timeout=60_000)
    total = page.locator(".reveal .slides > section").count()
    assert total >= 10, f"only {total} slides"
    page.screenshot(path=screenshots / "slides_title.png")
    seen = {page.evaluate("() => location.hash")}
    for _ in range(min(total, 30)):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(100)
        seen.add(page.evaluate("() => location.hash"))
    assert len(seen) >= 10, f"the arrow key did not step through the slides: {sorted(seen)}"
    # MathJax 2 (CommonHTML output) turns $...$ into span.MathJax_CHTML
    page.wait_for_function("() => document.querySelectorAll('.MathJax_CHTML').length >= 5", timeout=60_000)
    assert page.locator(".MathJax_Error, .mjx-merror").count() == 0, "MathJax reported an error"
    # go to the first slide with math on it and take its picture
    index = page.evaluate("""() => [...document.querySelectorAll('.reveal .slides > section')]
        .findIndex(s => s.querySelector('.MathJax_CHTML'))""")
    assert index >= 0
    page.evaluate(f"() => {{ location.hash = '#/{index}'; }}")
    # typeset and laid out: the formulas on the current slide have a size
    page.wait_for_function("""() => { const m = [...document.querySelectorAll('section.present .MathJax_CHTML')];
        return m.length > 0 && m.every(e => e.getBoundingClientRect().width > 0); }""", timeout=60_000)
    page.wait_for_timeout(1000)  # let the web fonts settle before the picture
    page.screenshot(path=screenshots / "slides_math.png")
    assert offline_requests == [], f"the deck tried to load {offline_requests[:5]}"


@pytest.mark.timeout(300)
def test_site_index_links_every_lecture_with_plots(page, offline_requests, screenshots):
    index = built(SITE / "index.html", "site")
    page.goto(index.as_uri())
    links = page.locator("table a").evaluate_all("els => els.map(a => a.href)")
    lectures = sorted(p.stem for p in (ROOT / "lectures").glob("l[0-9][0-9]_*.ipynb"))
    assert len(links) == len(lectures), "the index must list every lecture"
    page.screenshot(path=screenshots / "site_index.png", full_page=True)
    for href in links:
        page.goto(href)
        page.wait_for_load_state("load")
        assert page.locator(".jp-Notebook").count() == 1, href
        n_plots = page.locator(".jp-OutputArea-output img").count()
        assert n_plots >= 2, f"{href}: {n_plots} plots"
        broken = page.locator(".jp-OutputArea-output img").evaluate_all(
            "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert broken == 0, f"{href}: {broken} images did not load"
    page.screenshot(path=screenshots / "site_lecture.png")
    assert offline_requests == [], f"the site tried to load {offline_requests[:5]}"
