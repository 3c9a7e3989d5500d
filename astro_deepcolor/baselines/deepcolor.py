# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The deep-coloring CNN behind the baseline detector interface."""

import warnings

import numpy as np

__all__ = ['DeepColorDetector', 'DeepColorFlipsDetector']


class DeepColorDetector:
    """
    The deep-coloring CNN behind the baseline interface.

    One network pass per image (``predict``), then ``segment`` at each
    probability threshold. Fluxes and areas are measured like the
    baselines' on the image minus its median; positions are the windowed
    centroids the package's catalogue gives (``x_win``, ``y_win``, see
    `~astro_deepcolor.catalog.windowed_centroids`) on the image minus its
    background, as the baselines report their own detector's positions
    (sep's and SExtractor's isophotal barycentres, photutils' centroid).

    Parameters
    ----------
    fwhm : float, optional
        Unused (kept for the common interface).
    n_pixels : int, optional
        Minimum segment area.
    model : str or None, optional
        Model file (None: the shipped default).
    """

    name = 'cnn'
    threshold_name = 'probability'
    last_error = None
    flips = False

    def __init__(self, *, fwhm=None, n_pixels=5, model=None):
        self.n_pixels = n_pixels
        self.model = model

    @classmethod
    def unavailable_reason(cls, model=None):
        """
        Why the CNN cannot run (None when it can).

        Parameters
        ----------
        model : str or None, optional
            Model file (None: the shipped default).

        Returns
        -------
        reason : str or None
        """
        try:
            from astro_deepcolor import DeepColorSegmentation  # noqa: F401
            from astro_deepcolor.model import load_model
            load_model(model)
        except Exception as exc:  # any failure at all means "skip the CNN"
            return ('the CNN (astro_deepcolor.inference and its model) is not '
                    f'usable: {type(exc).__name__}: {exc}')
        return None

    @classmethod
    def available(cls, model=None):
        """
        Whether the CNN can run.

        Parameters
        ----------
        model : str or None, optional
            Model file (None: the shipped default).

        Returns
        -------
        available : bool
        """
        return cls.unavailable_reason(model) is None

    def _finder(self):
        from astro_deepcolor import DeepColorSegmentation

        kwargs = {'n_pixels': self.n_pixels, 'progress_bar': False,
                  'threshold': 0.5, 'flips': self.flips}
        if self.model is not None:
            kwargs['model'] = self.model
        return DeepColorSegmentation(**kwargs)

    def sweep(self, data, thresholds, mask=None):
        """
        Segment at many probability thresholds from one network pass.

        Parameters
        ----------
        data : 2D array-like
            The image.
        thresholds : iterable of float
            Probability thresholds.
        mask : 2D bool array-like, optional
            Bad pixels.

        Yields
        ------
        threshold, segm, table
            As for the baselines.
        """
        from photutils.utils.exceptions import NoDetectionsWarning

        from astro_deepcolor.catalog import windowed_centroids

        from .base import prepare_image, segment_catalog

        finder = self._finder()
        data, bad = prepare_image(data, mask, dtype=np.float32)
        m = bad if bad.any() else None
        # One background estimate for the network input and the peak image.
        background, rms = finder.estimate_background(data, mask=m)
        probs = finder.predict(data, mask=m, background=background, rms=rms)
        peak = finder.peak_image(data, mask=m, background=background, rms=rms)
        image = data - np.median(data[~bad]) if (~bad).any() else data
        sub = data - background
        for t in thresholds:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NoDetectionsWarning)
                segm = finder.segment(probs, threshold=float(t),
                                      mask=bad if bad.any() else None,
                                      peak_image=peak)
            if segm is None:
                yield t, None, segment_catalog(np.zeros(data.shape, int), image)
            else:
                table = segment_catalog(segm, image)
                table['x'], table['y'] = windowed_centroids(
                    sub, segm, mask=bad if bad.any() else None)
                yield t, segm, table


class DeepColorFlipsDetector(DeepColorDetector):
    """
    The CNN with ``flips=True``: its foreground probability averaged over
    the image and its three flips (four network passes per image); see
    `~astro_deepcolor.DeepColorSegmentation`. Parameters as for
    `DeepColorDetector`.
    """

    name = 'cnn_flips'
    flips = True
