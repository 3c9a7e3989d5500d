# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Plot a simulated image with its truth footprints and contaminants."""

import numpy as np

from .contaminants import CONTAMINANT_FLAGS

__all__ = ['plot_simulation']


def plot_simulation(sim, *, ax=None, footprints=True, contaminants=True,
                    stretch_percent=99.5, legend=True):
    """
    Show a simulated image with truth footprints and contaminants overlaid.

    The image is shown with an asinh stretch (astropy.visualization);
    footprint outlines are drawn in the segmentation's own colour map and
    each contaminant class as a translucent colour.

    Parameters
    ----------
    sim : `~astro_deepcolor.simulation.SimulatedImage`
        The simulation.
    ax : `matplotlib.axes.Axes`, optional
        Axes to draw into (a new figure by default).
    footprints : bool, optional
        Draw truth footprint outlines.
    contaminants : bool, optional
        Shade contaminant pixels, one colour per class.
    stretch_percent : float, optional
        Percentile interval of the display.
    legend : bool, optional
        Add a legend of the contaminant classes present.

    Returns
    -------
    ax : `matplotlib.axes.Axes`
        The axes.
    """
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 7))
    norm = ImageNormalize(sim.data, interval=PercentileInterval(stretch_percent),
                          stretch=AsinhStretch(0.05))
    ax.imshow(sim.data, origin='lower', cmap='Greys_r', norm=norm,
              interpolation='nearest')
    handles = []
    if contaminants and sim.contaminants.any():
        cmap = plt.get_cmap('tab10')
        for i, (name, bit) in enumerate(CONTAMINANT_FLAGS.items()):
            m = (sim.contaminants & bit) > 0
            if not m.any():
                continue
            color = cmap(i % 10)
            ax.imshow(np.where(m, 1.0, np.nan), origin='lower', alpha=0.45,
                      cmap=ListedColormap([color]), interpolation='nearest')
            handles.append(Patch(color=color, alpha=0.6, label=name))
    if footprints and sim.segmentation.n_labels:
        sim.segmentation.imshow(ax=ax, alpha=0.0)  # keep photutils' cmap
        ax.contour(sim.segmentation.data > 0, levels=[0.5], colors='lime',
                   linewidths=0.5, origin='lower')
        handles.append(Patch(edgecolor='lime', facecolor='none',
                             label=f'truth footprints ({sim.segmentation.n_labels})'))
    if legend and handles:
        ax.legend(handles=handles, loc='upper right', fontsize=7, framealpha=0.7)
    ax.set_title(f'{sim.preset.name} {sim.meta["regime"]} seed={sim.meta["seed"]}')
    return ax
