# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the training-domain check (PSF FWHM and sampling)."""

import warnings

import numpy as np
import pytest
from astropy.wcs import WCS

from astro_deepcolor.domain import (
    DomainWarning,
    check_image_domain,
    measure_fwhm,
    training_domain,
)
from astro_deepcolor.simulation import PRESETS, simulate_image


def test_training_domain_follows_the_presets():
    dom = training_domain()
    fwhms = [p.fwhm for p in PRESETS.values()]
    assert dom['fwhm_pix'] == (pytest.approx(0.8 * min(fwhms)),
                               pytest.approx(1.25 * max(fwhms)))
    assert dom['pixel_scale'] == (min(p.pixel_scale for p in PRESETS.values()),
                                  max(p.pixel_scale for p in PRESETS.values()))
    assert set(dom['presets']) == set(PRESETS)


@pytest.mark.parametrize('fwhm', [3.5, 5.5])
def test_fwhm_measured_on_a_training_like_image(fwhm):
    sim = simulate_image((512, 512), regime='contaminated', preset='decam',
                         seed=5, fwhm=fwhm)
    measured, n = measure_fwhm(sim.data)
    assert n >= 3
    assert measured == pytest.approx(fwhm, rel=0.15)
    with warnings.catch_warnings():
        warnings.simplefilter('error', DomainWarning)
        check = check_image_domain(sim.data)
    assert check.in_domain
    assert check.problems == ()


@pytest.mark.parametrize(('fwhm', 'match'), [(9.0, 'broader than the training'),
                                             (1.0, 'could not be measured'),
                                             (1.5, 'sharper than the training')])
def test_warns_outside_the_domain(fwhm, match):
    sim = simulate_image((512, 512), regime='clean', preset='decam', seed=5,
                         fwhm=fwhm)
    with pytest.warns(DomainWarning, match=match):
        check = check_image_domain(sim.data)
    assert not check.in_domain
    with warnings.catch_warnings():
        warnings.simplefilter('error', DomainWarning)
        assert not check_image_domain(sim.data, warn=False).in_domain


def test_pixel_scale_from_wcs_and_validation():
    sim = simulate_image((512, 512), regime='clean', preset='decam', seed=5,
                         fwhm=4.5)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.cdelt = [-0.262 / 3600, 0.262 / 3600]
    check = check_image_domain(sim.data, wcs=wcs)
    assert check.pixel_scale == pytest.approx(0.262)
    assert check_image_domain(sim.data, pixel_scale=0.5).pixel_scale == 0.5
    with pytest.raises(ValueError, match=r'tolerance must be in \[0, 1\), got 2'):
        check_image_domain(sim.data, tolerance=2)
    with pytest.raises(ValueError, match='data must be a 2D image'):
        measure_fwhm(np.zeros(5))
    with pytest.raises(ValueError, match='mask must have the shape'):
        measure_fwhm(np.zeros((5, 5)), mask=np.zeros((4, 4), bool))


def test_seeing_spread_is_the_simulators():
    """The domain's FWHM range follows the simulator's seeing draw."""
    from astro_deepcolor.domain import SEEING_SPREAD

    ratios = [simulate_image((32, 32), regime='clean', preset='hsc',
                             seed=s).fwhm / PRESETS['hsc'].fwhm
              for s in range(30)]
    assert SEEING_SPREAD[0] <= min(ratios) < SEEING_SPREAD[0] + 0.1
    assert SEEING_SPREAD[1] - 0.1 < max(ratios) <= SEEING_SPREAD[1]
