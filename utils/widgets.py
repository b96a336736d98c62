"""Widgets whose logic is a plain function.

A lecture writes ``update(**values) -> matplotlib Figure`` (testable without a browser) and calls
``utils.widgets.interact(update, width=IntSlider(...))``: the figure is drawn once straight away (so a headless
run, nbval, or a static render still shows it and exercises the code) and redrawn whenever a control changes.

The figure goes into an ordinary display output that is updated in place (``display_id``), not into an
``ipywidgets.Output``: executing an Output-widget capture headless can stall nbclient (jupyter/nbclient#312).
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import DisplayHandle, display

__all__ = ["interact", "render"]


def render(update: Callable[..., Any], **values: Any) -> Any:
    """Call ``update(**values)`` and close the figure it returns (so it is not drawn twice); return the result.
    Tests use this to exercise a widget's update function without a browser."""
    result = update(**values)
    if isinstance(result, plt.Figure):
        plt.close(result)
    return result


def interact(update: Callable[..., Any], **controls: W.ValueWidget) -> None:
    """Show ``controls`` in a row, then ``update(**values)`` below them, redrawn in place on every change.

    ``update`` returns a matplotlib Figure or anything displayable (e.g. a string). Returns None, so a call as
    the last line of a cell does not display anything twice.
    """
    if not controls:
        raise ValueError("interact needs at least one control, e.g. width=ipywidgets.IntSlider(...)")

    def current() -> Any:
        return render(update, **{name: c.value for name, c in controls.items()})

    display(W.HBox(list(controls.values())))
    handle = DisplayHandle()  # an output we can replace in place
    handle.display(current())

    def redraw(_change: Any = None) -> None:
        handle.update(current())

    for c in controls.values():
        c.observe(redraw, names="value")
