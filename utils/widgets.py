"""Widgets whose logic is a plain function.

A lecture writes ``update(**values) -> matplotlib Figure`` (testable without a browser) and calls
``utils.widgets.interact(update, width=IntSlider(...))``: the figure is drawn once straight away (so a headless
run, nbval, or a static render still shows it and exercises the code) and redrawn whenever a control changes.
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

__all__ = ["interact", "controls_box", "render"]


def render(update: Callable[..., Any], **values: Any) -> Any:
    """Call ``update(**values)`` and close the figure it returns (so it is not drawn twice); return the result.
    Tests use this to exercise a widget's update function without a browser."""
    result = update(**values)
    if isinstance(result, plt.Figure):
        plt.close(result)
    return result


def interact(update: Callable[..., Any], **controls: W.ValueWidget) -> None:
    """Show ``controls`` above an output area; draw ``update(**values)`` now and on every change.

    ``update`` returns a matplotlib Figure (shown) or anything displayable (e.g. a string). Returns None, so
    a call as the last line of a cell does not display the widget a second time.
    """
    display(controls_box(update, **controls))


def controls_box(update: Callable[..., Any], **controls: W.ValueWidget) -> W.VBox:
    """The widget behind :func:`interact`, not displayed: controls above an output area that ``update`` has
    drawn into once already and redraws on every change."""
    if not controls:
        raise ValueError("interact needs at least one control, e.g. width=ipywidgets.IntSlider(...)")
    out = W.Output()

    def redraw(_change: Any = None) -> None:
        values = {name: c.value for name, c in controls.items()}
        with out:
            out.clear_output(wait=True)
            result = update(**values)
            if isinstance(result, plt.Figure):
                display(result)
                plt.close(result)
            elif result is not None:
                display(result)

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox(list(controls.values())), out])
