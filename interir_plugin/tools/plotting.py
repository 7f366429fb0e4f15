"""Small matplotlib helpers shared by the figures of ``interir explain`` and ``interir audit``."""
import numpy as np


def note(ax, text, fontsize=9):
    """A panel holding only ``text`` (centred, wrapped), no axes."""
    ax.text(0.5, 0.5, text, ha='center', va='center', fontsize=fontsize, transform=ax.transAxes, wrap=True)
    ax.axis('off')


def stage_ticks(ax, count, label='stage'):
    """X ticks ``1 .. count - 1, final`` for per-stage values; returns the tick positions."""
    ticks = list(range(1, count + 1))
    ax.set_xticks(ticks, [str(k) for k in ticks[:-1]] + ['final'])
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
    return ticks


def heat_map(ax, values, rows, cols, title, vmax=1.0, xlabel=None):
    """A labelled heat map on [0, vmax] with every value written in its cell (up to 120 cells)."""
    values = np.asarray(values, float)
    im = ax.imshow(values, cmap='Blues', vmin=0, vmax=vmax, aspect='auto')
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha='right', fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    if values.size <= 120:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=6,
                    color='white' if v > 0.6 * vmax else 'black')
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7)
    ax.set_title(title, fontsize=9)
    return im
