"""utils.plotting and utils.widgets, headless."""
from __future__ import annotations

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils import plotting, widgets  # noqa: E402


def test_plot_curves_smooths_and_labels():
    fig = plotting.plot_curves({"train": [3, 2, 1, 0.5], "val": [3, 2.5, 2, 2]}, title="t", smooth=2, logy=True)
    ax = fig.axes[0]
    assert ax.get_title() == "t" and ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["train", "val"]
    assert list(ax.lines[0].get_ydata()) == [2.5, 1.5, 0.75]
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one curve"):
        plotting.plot_curves({})


@pytest.mark.parametrize("shape", [(12, 8, 8), (12, 1, 8, 8), (12, 3, 8, 8)])
def test_show_images_grid(shape):
    fig = plotting.show_images(torch.rand(shape), labels=list(range(12)), ncols=5, title="grid")
    assert len(fig.axes) == 15 and fig.axes[0].get_title() == "0"
    plt.close(fig)


def test_show_images_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\)"):
        plotting.show_images(torch.rand(8, 8))


def test_decision_boundary_colours_the_plane_by_prediction():
    X = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    fig = plotting.plot_decision_boundary(lambda p: (p[:, 0] > 0).long(), X, torch.tensor([0, 1]), resolution=20)
    assert fig.axes[0].get_title() == "decision boundary"
    plt.close(fig)
    with pytest.raises(ValueError, match=r"X must be \(N, 2\)"):
        plotting.plot_decision_boundary(lambda p: p, torch.zeros(3, 3), torch.zeros(3))


def test_interact_draws_once_and_on_change():
    calls = []

    def update(width):
        calls.append(width)
        fig, ax = plt.subplots()
        ax.set_title(f"width {width}")
        return fig

    slider = W.IntSlider(value=3, min=1, max=10)
    open_before = len(plt.get_fignums())
    assert widgets.interact(update, width=slider) is None, "returns None: no double display"
    assert calls == [3]
    slider.value = 7
    assert calls == [3, 7]
    assert len(plt.get_fignums()) == open_before, "figures are closed after being displayed"


def test_interact_needs_controls_and_render_closes_figures():
    with pytest.raises(ValueError, match="at least one control"):
        widgets.interact(lambda: None)
    before = len(plt.get_fignums())
    fig = widgets.render(lambda k: plt.subplots()[0], k=1)
    assert isinstance(fig, plt.Figure) and len(plt.get_fignums()) == before
