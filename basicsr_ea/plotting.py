"""Figures drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``, no pyplot), so this project
never chooses or changes the process's backend (a user's notebook or GUI keeps its own), written atomically."""
import io

from matplotlib.figure import Figure

from basicsr_ea.files import write_atomic


def new_figure(figsize):
    """(figure, axes) of one plot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save_figure(fig, path, dpi=120):
    """PNG of ``fig`` at ``path``, written atomically (a failed write names the file)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
    write_atomic(path, buffer.getvalue())
