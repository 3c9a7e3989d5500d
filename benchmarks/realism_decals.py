# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Realism check: a DECam-preset simulation beside a real DECaLS DR7 coadd.

The real image is ``../shared/data/real/astro_rcnn/img_r.fits`` (DECaLS DR7
r-band coadd cutout, 512x512, 0.262"/px, nanomaggies, background
subtracted). Both images go through exactly the same measurements:

1. background noise: sep background (64 px mesh), source mask (sep
   segmentation at 1.5 sigma dilated by 4 px), robust sigma (1.4826 MAD)
   of the unmasked pixels, histogram in units of that sigma, the raw sigma
   in AB mag, and the neighbour-pixel noise correlation;
2. PSF: circular Moffat fits to 31x31 stamps of bright (peak > 30 sigma),
   isolated (no detection within 15 px), unflagged, compact sources on the
   stellar locus of the half-light radius (sep ``flux_radius``);
3. point-source depth: noise of the optimal PSF-weighted flux, measured
   empirically by filtering the image with the fitted PSF and taking the
   robust sigma at source-free positions (so correlated noise counts);
4. source counts: ``sep.extract`` at 1.5 sigma, minarea 5, default
   filter and deblending, Kron (MAG_AUTO-like) magnitudes in AB, per deg^2
   per mag.

The coadd is deeper than the single 90 s epoch of the ``'decam'`` preset.
The simulation therefore uses ``dataclasses.replace(PRESETS['decam'],
exposure_time=T)`` with ``T`` chosen so that its point-source depth,
measured as in (3), equals the coadd's; the PSF FWHM is the preset's
median seeing (1.25"), so the PSF comparison tests the preset.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/realism_decals.py

Writes ``docs/_static/realism_decals.png`` and
``results/realism/realism.json``.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ['main']

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / '..' / 'shared' / 'data'
REAL = DATA / 'real' / 'astro_rcnn' / 'img_r.fits'
PIXEL_SCALE = 0.262          # arcsec per pixel, both images
DETECT_SIGMA = 1.5           # sep detection threshold, in each image's sigma
MIN_AREA = 5
STAMP = 15                   # half-size of PSF stamps
ISOLATION = 15.0             # px: no other detection this close to a PSF star
MAG_BINS = np.arange(16.0, 26.51, 0.5)


def robust_sigma(x):
    """1.4826 times the median absolute deviation."""
    x = np.asarray(x, float)
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def measure_background(img):
    """sep background; returns residual image, source mask and robust sigma."""
    import sep
    from scipy import ndimage

    img = np.ascontiguousarray(img, dtype=np.float64)
    bkg = sep.Background(img, bw=64, bh=64, fw=3, fh=3)
    resid = img - bkg.back()
    _, seg = sep.extract(resid, DETECT_SIGMA, err=bkg.globalrms, minarea=MIN_AREA,
                         segmentation_map=True)
    yy, xx = np.mgrid[-4:5, -4:5]
    mask = ndimage.binary_dilation(seg > 0, structure=xx**2 + yy**2 <= 16)
    sigma = robust_sigma(resid[~mask])
    return resid, mask, sigma


def correlation(resid, mask, sigma):
    """Pixel-to-pixel noise correlation at lags (1, 0) and (0, 1)."""
    out = {}
    for name, (dy, dx) in {'x': (0, 1), 'y': (1, 0)}.items():
        a = resid[:resid.shape[0] - dy, :resid.shape[1] - dx]
        b = resid[dy:, dx:]
        ok = (~mask[:a.shape[0], :a.shape[1]] & ~mask[dy:, dx:]
              & (np.abs(a) < 5 * sigma) & (np.abs(b) < 5 * sigma))
        out[name] = float(np.corrcoef(a[ok], b[ok])[0, 1])
    return out


def detect(resid, sigma):
    """sep detections with Kron fluxes and half-light radii."""
    import sep

    objs = sep.extract(resid, DETECT_SIGMA, err=sigma, minarea=MIN_AREA)
    x, y, a, b, t = objs['x'], objs['y'], objs['a'], objs['b'], objs['theta']
    t = np.clip(t, -np.pi / 2, np.pi / 2)
    kr, _ = sep.kron_radius(resid, x, y, a, b, t, 6.0)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, 1.0)
    flux, _, fflag = sep.sum_ellipse(resid, x, y, a, b, t, 2.5 * kr, subpix=1)
    # Small or failed Kron apertures fall back to a 3.5 px circle (SExtractor).
    small = (kr * np.sqrt(a * b) < 1.75) | ~np.isfinite(flux)
    if small.any():
        f2, _, _ = sep.sum_circle(resid, x[small], y[small], 3.5, subpix=1)
        flux[small] = f2
    r50, _ = sep.flux_radius(resid, x, y, 6.0 * a, 0.5, normflux=flux, subpix=5)
    return {'x': x, 'y': y, 'flux': flux, 'r50': r50, 'peak': objs['peak'],
            'flag': objs['flag'] | fflag}


def moffat_fwhm(resid, x, y):
    """Circular Moffat (+ constant) fit to a stamp; returns (fwhm, beta) or None."""
    from astropy.modeling import fitting, models

    xc, yc = round(x), round(y)
    ny, nx = resid.shape
    if not (STAMP <= xc < nx - STAMP and STAMP <= yc < ny - STAMP):
        return None
    st = resid[yc - STAMP:yc + STAMP + 1, xc - STAMP:xc + STAMP + 1]
    yy, xx = np.mgrid[-STAMP:STAMP + 1, -STAMP:STAMP + 1]
    model = (models.Moffat2D(amplitude=st.max(), x_0=x - xc, y_0=y - yc, gamma=3.0, alpha=3.0,
                             bounds={'gamma': (0.3, 30), 'alpha': (1.01, 15)})
             + models.Const2D(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fit = fitting.TRFLSQFitter()(model, xx, yy, st, maxiter=400)
    g, al = float(fit.gamma_0.value), float(fit.alpha_0.value)
    fwhm = 2 * abs(g) * math.sqrt(2 ** (1 / al) - 1)
    if not np.isfinite(fwhm) or fwhm <= 0:
        return None
    return fwhm, al


def psf_stars(cat, resid, sigma):
    """Bright, isolated, unsaturated compact sources and their Moffat fits."""
    from scipy.spatial import cKDTree

    x, y = cat['x'], cat['y']
    tree = cKDTree(np.c_[x, y])
    n_near = np.array([len(tree.query_ball_point([xi, yi], ISOLATION)) - 1
                       for xi, yi in zip(x, y, strict=True)])
    peak_max = np.nanmax(resid)
    bright = ((cat['peak'] > 30 * sigma) & (cat['peak'] < 0.5 * peak_max)
              & (n_near == 0) & (cat['flag'] == 0) & np.isfinite(cat['r50']))
    idx = np.nonzero(bright)[0]
    if idx.size == 0:
        return {'n': 0}
    # Stellar locus: the smallest half-light radii among bright sources.
    r50 = cat['r50'][idx]
    r_star = float(np.percentile(r50, 20))
    on_locus = idx[r50 < 1.15 * r_star]
    fits = [moffat_fwhm(resid, x[i], y[i]) for i in on_locus]
    ok = [(i, f) for i, f in zip(on_locus, fits, strict=True) if f is not None]
    fwhm = np.array([f[0] for _, f in ok])
    beta = np.array([f[1] for _, f in ok])
    profiles = [radial_profile(resid, x[i], y[i]) for i, _ in ok]
    return {'n': len(ok), 'index': [int(i) for i, _ in ok], 'fwhm': fwhm, 'beta': beta,
            'r50_locus': r_star, 'profile': np.median(profiles, axis=0) if profiles else None}


def radial_profile(resid, x, y, rmax=STAMP):
    """Azimuthal mean profile in 1 px annuli, per unit flux within ``rmax``."""
    xc, yc = round(x), round(y)
    st = resid[yc - rmax:yc + rmax + 1, xc - rmax:xc + rmax + 1]
    yy, xx = np.mgrid[-rmax:rmax + 1, -rmax:rmax + 1]
    r = np.hypot(xx + xc - x, yy + yc - y)
    k = np.floor(r.ravel()).astype(int)
    prof = np.array([st.ravel()[k == i].mean() for i in range(rmax)])
    return prof / st[r <= rmax].sum()


def psf_depth(resid, mask, fwhm, beta, zero_point_fn):
    """
    5-sigma point-source depth from the measured noise of the optimal flux.

    The image is cross-correlated with the normalised Moffat PSF ``k``;
    ``sum(k * d) / sum(k**2)`` is the optimal flux estimate and its noise is
    measured (robust sigma) at positions whose PSF footprint is free of
    sources, so pixel-correlated noise is included. The white-noise value
    ``sigma_pix / sqrt(sum(k**2))`` is returned too.
    """
    from scipy import ndimage
    from scipy.signal import fftconvolve

    yy, xx = np.mgrid[-STAMP:STAMP + 1, -STAMP:STAMP + 1]
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    k = (1 + (xx**2 + yy**2) / alpha**2) ** (-beta)
    k /= k.sum()
    s2 = float((k**2).sum())
    filt = fftconvolve(resid, k[::-1, ::-1], mode='same') / s2
    free = ~ndimage.binary_dilation(mask, iterations=math.ceil(fwhm))
    free[:STAMP] = free[-STAMP:] = False
    free[:, :STAMP] = free[:, -STAMP:] = False
    sig_flux = robust_sigma(filt[free])
    sig_pix = robust_sigma(resid[~mask])
    return {'depth5': float(zero_point_fn(5 * sig_flux)),
            'depth5_white': float(zero_point_fn(5 * sig_pix / math.sqrt(s2))),
            'nea_pix': 1 / s2, 'flux_sigma': sig_flux}


def counts(mags, area_deg2):
    """Number counts per deg^2 per mag in MAG_BINS with Poisson errors."""
    n, _ = np.histogram(mags[np.isfinite(mags)], MAG_BINS)
    width = np.diff(MAG_BINS)
    return n, n / area_deg2 / width, np.sqrt(n) / area_deg2 / width


def analyse(img, flux_to_mag):
    """All measurements on one image (in its own units)."""
    resid, mask, sigma = measure_background(img)
    cat = detect(resid, sigma)
    with np.errstate(invalid='ignore', divide='ignore'):
        cat['mag'] = flux_to_mag(np.where(cat['flux'] > 0, cat['flux'], np.nan))
    # The same detection on the negated image counts noise detections.
    neg = detect(-resid, sigma)
    with np.errstate(invalid='ignore', divide='ignore'):
        cat['neg_mag'] = flux_to_mag(np.where(neg['flux'] > 0, neg['flux'], np.nan))
    stars = psf_stars(cat, resid, sigma)
    out = {'resid': resid, 'mask': mask, 'sigma': sigma, 'cat': cat, 'stars': stars,
           'corr': correlation(resid, mask, sigma)}
    if stars['n']:
        out['depth'] = psf_depth(resid, mask, float(np.median(stars['fwhm'])),
                                 float(np.median(stars['beta'])), flux_to_mag)
    return out


def exposure_for_depth(preset, depth):
    """Exposure time giving ``preset`` the 5-sigma ``depth`` (preset formula)."""
    from scipy.optimize import brentq

    def f(logt):
        return dataclasses.replace(preset, exposure_time=10**logt).depth - depth

    return 10 ** brentq(f, -1, 7)


def simulate(preset, seeds, shape):
    """Clean-regime simulations at the preset's median seeding."""
    from astro_deepcolor.simulation import simulate_image

    return [simulate_image(shape, regime='clean', seed=s, preset=preset, fwhm=preset.fwhm)
            for s in seeds]


def analyse_sims(sims, preset):
    """Analyse simulations and pool their catalogues."""
    res = [analyse(s.data, preset.adu_to_mag) for s in sims]
    return res


def _median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else float('nan')


def summary(res, to_mag, area_deg2, pixel_unit):
    """JSON-able numbers of one image or a list of images."""
    res = res if isinstance(res, list) else [res]
    sig = _median([r['sigma'] for r in res])
    fwhm = np.concatenate([r['stars']['fwhm'] for r in res if r['stars']['n']])
    beta = np.concatenate([r['stars']['beta'] for r in res if r['stars']['n']])
    mags = np.concatenate([r['cat']['mag'] for r in res])
    n, dens, err = counts(mags, area_deg2 * len(res))
    neg = np.concatenate([r['cat']['neg_mag'] for r in res])
    n_neg, dens_neg, _ = counts(neg, area_deg2 * len(res))
    # Sizes of resolved detections (off the stellar locus), 20 < m < 23.
    r50 = np.concatenate([r['cat']['r50'] for r in res])
    locus = np.concatenate([np.full(r['cat']['r50'].size, r['stars'].get('r50_locus', np.nan))
                            for r in res])
    sel = (mags > 20) & (mags < 23) & (r50 > 1.15 * locus)
    v = np.concatenate([(q['resid'] / q['sigma'])[~q['mask']] for q in res])
    return {
        'n_images': len(res),
        'area_deg2': area_deg2 * len(res),
        f'sigma_pix_{pixel_unit}': sig,
        'sigma_pix_mag': float(to_mag(sig)),
        'sigma_pix_mag_arcsec2': float(to_mag(sig) + 5 * math.log10(PIXEL_SCALE)),
        'noise_correlation_x': _median([r['corr']['x'] for r in res]),
        'noise_correlation_y': _median([r['corr']['y'] for r in res]),
        'psf_n_stars': int(fwhm.size),
        'psf_fwhm_pix_median': float(np.median(fwhm)) if fwhm.size else None,
        'psf_fwhm_arcsec_median': float(np.median(fwhm) * PIXEL_SCALE) if fwhm.size else None,
        'psf_moffat_beta_median': float(np.median(beta)) if beta.size else None,
        'depth5_psf_mag': _median([r['depth']['depth5'] for r in res if 'depth' in r]),
        'depth5_white_noise_mag': _median([r['depth']['depth5_white'] for r in res
                                           if 'depth' in r]),
        'noise_fraction_beyond_4sigma': float(np.mean(np.abs(v) > 4)),
        'noise_fraction_beyond_4sigma_gaussian': 6.33e-5,
        'resolved_r50_arcsec_median_20_23': float(np.median(r50[sel]) * PIXEL_SCALE)
        if sel.any() else None,
        'resolved_fraction_20_23': float(sel.sum() / max(1, ((mags > 20) & (mags < 23)).sum())),
        'n_detections': int(mags.size),
        'n_negative_detections': int(np.isfinite(neg).sum()),
        'detections_per_deg2': float(mags.size / (area_deg2 * len(res))),
        'counts_n': n.tolist(),
        'counts_per_deg2_per_mag': dens.tolist(),
        'counts_err': err.tolist(),
        'negative_counts_n': n_neg.tolist(),
        'negative_counts_per_deg2_per_mag': dens_neg.tolist(),
    }


def slope(centres, dens, lo, hi):
    """Least-squares d log10 N / dm between ``lo`` and ``hi``."""
    ok = (centres >= lo) & (centres <= hi) & (dens > 0)
    if ok.sum() < 3:
        return float('nan')
    return float(np.polyfit(centres[ok], np.log10(dens[ok]), 1)[0])


def model_counts(centres, density=1.0):
    """The simulator's input counts (stars + galaxies) per deg^2 per mag."""
    from astro_deepcolor.simulation.population import GALAXY_COUNTS, STAR_COUNTS

    out = np.zeros_like(centres)
    for c in (GALAXY_COUNTS, STAR_COUNTS):
        out += density * c['n0'] * 10 ** (c['alpha'] * (centres - c['m0']))
    return out


def figure(real, sim, s_real, s_sim, variant, path):
    """The six-panel comparison figure."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize

    fig, axes = plt.subplots(2, 3, figsize=(13.5, 9.2))
    norm = ImageNormalize(vmin=-3, vmax=300, stretch=AsinhStretch(0.02))
    for ax, r, title in ((axes[0, 0], real, 'real: DECaLS DR7 r coadd'),
                         (axes[0, 1], sim[0],
                          f'simulated: decam preset, t = {variant.exposure_time:.0f} s')):
        ax.imshow(r['resid'] / r['sigma'], origin='lower', cmap='Greys_r', norm=norm,
                  interpolation='nearest')
        st = r['stars']
        if st['n']:
            ax.plot(r['cat']['x'][st['index']], r['cat']['y'][st['index']], 'o', mfc='none',
                    mec='tab:orange', ms=12, mew=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].text(0.02, 0.02, 'asinh stretch, -3 to 300 sigma of each image;\n'
                    'orange: PSF stars', transform=axes[0, 0].transAxes, color='w',
                    fontsize=8, va='bottom')

    # Noise histograms in units of each image's robust sigma.
    ax = axes[0, 2]
    bins = np.linspace(-6, 6, 97)
    xc = 0.5 * (bins[1:] + bins[:-1])
    for r, lab, col, s in ((real, 'real', 'k', s_real), (sim, 'sim', 'tab:blue', s_sim)):
        rr = r if isinstance(r, list) else [r]
        v = np.concatenate([(q['resid'] / q['sigma'])[~q['mask']] for q in rr])
        h, _ = np.histogram(v, bins, density=True)
        unit = 'nmgy' if lab == 'real' else 'ADU'
        sig = s['sigma_pix_nmgy'] if lab == 'real' else s['sigma_pix_adu']
        ax.step(xc, h, where='mid', color=col,
                label=(f'{lab}: $\\sigma$ = {sig:.3g} {unit}/px\n'
                       f'   = {s["sigma_pix_mag_arcsec2"]:.2f} AB mag/arcsec$^2$'))
    ax.plot(xc, np.exp(-xc**2 / 2) / math.sqrt(2 * math.pi), 'r:', label='N(0, 1)')
    ax.set_yscale('log')
    ax.set_ylim(1e-5, 1)
    ax.set_xlabel('background pixel / robust $\\sigma$ (source-masked)')
    ax.set_ylabel('density')
    ax.set_title(f'noise; neighbour correlation real {s_real["noise_correlation_x"]:.2f}, '
                 f'sim {s_sim["noise_correlation_x"]:.2f}', fontsize=10)
    ax.legend(fontsize=7.5, loc='upper right')

    # Sizes: half-light radius vs magnitude of all detections.
    ax = axes[1, 0]
    for r, lab, col, mk in ((sim, 'sim', 'tab:blue', '.'), (real, 'real', 'k', 'o')):
        rr = r if isinstance(r, list) else [r]
        m = np.concatenate([q['cat']['mag'] for q in rr])
        r50 = np.concatenate([q['cat']['r50'] for q in rr]) * PIXEL_SCALE
        ax.plot(m, r50, mk, color=col, ms=3 if lab == 'real' else 2,
                alpha=0.9 if lab == 'real' else 0.35, label=f'{lab} detections',
                mfc='none' if lab == 'real' else col)
    ax.set_yscale('log')
    ax.set_xlim(15.5, 26)
    ax.set_ylim(0.2, 10)
    ax.set_xlabel('Kron magnitude (AB)')
    ax.set_ylabel('half-light radius (arcsec, PSF-convolved)')
    ax.set_title('sizes (sep flux_radius)', fontsize=10)
    ax.legend(fontsize=8)

    # PSF: median normalised radial profiles of the PSF stars.
    ax = axes[1, 1]
    rad = (np.arange(STAMP) + 0.5) * PIXEL_SCALE
    for r, lab, col, s in ((real, 'real', 'k', s_real), (sim, 'sim', 'tab:blue', s_sim)):
        rr = r if isinstance(r, list) else [r]
        profs = [q['stars']['profile'] for q in rr if q['stars']['n']]
        if profs:
            ax.plot(rad, np.median(profs, axis=0), color=col, drawstyle='steps-mid',
                    label=(f'{lab}: {s["psf_n_stars"]} stars, FWHM '
                           f'{s["psf_fwhm_arcsec_median"]:.2f}", '
                           f'$\\beta$ {s["psf_moffat_beta_median"]:.1f}'))
    ax.set_yscale('log')
    ax.set_ylim(1e-6, 0.1)
    ax.set_xlabel('radius (arcsec)')
    ax.set_ylabel('surface brightness / flux (per px)')
    ax.set_title('PSF: median profile of PSF stars (Moffat-fit FWHM)', fontsize=10)
    ax.legend(fontsize=8)

    # Number counts.
    ax = axes[1, 2]
    c = 0.5 * (MAG_BINS[1:] + MAG_BINS[:-1])
    for s, lab, col, off in ((s_real, 'real', 'k', -0.05), (s_sim, 'sim', 'tab:blue', 0.05)):
        d, e = np.array(s['counts_per_deg2_per_mag']), np.array(s['counts_err'])
        ok = d > 0
        ax.errorbar(c[ok] + off, d[ok], e[ok], fmt='o' if lab == 'real' else 's',
                    color=col, ms=4, mfc='none' if lab == 'real' else col,
                    label=f'{lab} ({s["n_detections"]} det., {s["area_deg2"]:.4f} deg$^2$)')
    ax.plot(c, model_counts(c), 'b--', lw=0.8, label='simulator input (stars + galaxies)')
    for s, col in ((s_real, 'k'), (s_sim, 'tab:blue')):
        ax.axvline(s['depth5_psf_mag'], color=col, ls=':', lw=0.8)
    ax.set_yscale('log')
    ax.set_xlim(15.5, 26.5)
    ax.set_ylim(3e1, 3e6)
    ax.set_xlabel('Kron magnitude (AB)')
    ax.set_ylabel('N / deg$^2$ / mag')
    ax.set_title(f'counts: sep {DETECT_SIGMA} sigma, minarea {MIN_AREA}; '
                 'dotted: 5$\\sigma$ depth', fontsize=10)
    ax.legend(fontsize=7.5, loc='upper left')
    ax.text(0.98, 0.03, f'same detection on the negated images: {s_real["n_negative_detections"]} '
            f'real, {s_sim["n_negative_detections"]} sim\nreal field: ~4\' from the centre of '
            'the cluster Abell 1689 (z = 0.18)', transform=ax.transAxes, ha='right',
            va='bottom', fontsize=7)

    fig.suptitle(
        'Real DECaLS DR7 r coadd vs simulated decam preset at matched pixel scale (0.262") and '
        f'depth: exposure_time 90 s -> {variant.exposure_time:.0f} s so the measured 5-sigma\n'
        f'PSF depth matches ({s_real["depth5_psf_mag"]:.2f} real, {s_sim["depth5_psf_mag"]:.2f} '
        f'sim); sim: clean regime, density 1, seeing = preset median 1.25"; '
        f'{s_sim["n_images"]} sim images pooled for the statistics, one shown.',
        fontsize=9.5)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Quantise to a 128-colour palette: noise images compress badly.
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=80)
    plt.close(fig)
    buf.seek(0)
    Image.open(buf).convert('RGB').quantize(128).save(path, optimize=True)


def main(argv=None):
    """Run the comparison; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--n-sims', type=int, default=8,
                        help='simulated 512x512 images pooled (default 8)')
    parser.add_argument('--figure', default=str(ROOT / 'docs' / '_static' / 'realism_decals.png'))
    parser.add_argument('--out', default=str(ROOT / 'results' / 'realism' / 'realism.json'))
    args = parser.parse_args(argv)
    if not REAL.is_file():
        print(f'realism_decals: the real image {REAL} is absent (it lives in ../shared/data, '
              'outside the repository); nothing to compare with.', file=sys.stderr)
        return 1
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from astropy.io import fits

    from astro_deepcolor.simulation import PRESETS

    img = fits.getdata(REAL).astype(np.float64)
    shape = img.shape
    area = shape[0] * shape[1] * (PIXEL_SCALE / 3600) ** 2

    def nmgy_to_mag(f):
        return 22.5 - 2.5 * np.log10(f)

    real = analyse(img, nmgy_to_mag)
    s_real = summary(real, nmgy_to_mag, area, 'nmgy')
    target = s_real['depth5_psf_mag']
    print(f'real: sigma {s_real["sigma_pix_nmgy"]:.4g} nmgy/px, PSF FWHM '
          f'{s_real["psf_fwhm_arcsec_median"]:.3f}" ({s_real["psf_n_stars"]} stars), '
          f'depth5 {target:.2f} (white-noise formula {s_real["depth5_white_noise_mag"]:.2f})')

    # Depth matching: preset formula first, then one correction from the
    # depth measured on the simulations exactly as on the real image.
    base = PRESETS['decam']
    seeds = range(args.n_sims)
    t = exposure_for_depth(base, target)
    for it in range(2):
        variant = dataclasses.replace(base, name='decam_coadd', exposure_time=t)
        sims = simulate(variant, seeds, shape)
        res = analyse_sims(sims, variant)
        s_sim = summary(res, variant.adu_to_mag, area, 'adu')
        delta = target - s_sim['depth5_psf_mag']
        print(f'iteration {it}: t = {t:.0f} s, preset depth {variant.depth:.2f}, '
              f'measured sim depth {s_sim["depth5_psf_mag"]:.2f} (target {target:.2f})')
        if abs(delta) < 0.05 or it == 1:
            break
        t = exposure_for_depth(base, variant.depth + delta)
    c = 0.5 * (MAG_BINS[1:] + MAG_BINS[:-1])
    results = {
        'real_image': 'DECaLS DR7 r coadd, astro_rcnn example/set_0 img_r.fits',
        'settings': {'detect_sigma': DETECT_SIGMA, 'min_area': MIN_AREA,
                     'psf_star_peak_min_sigma': 30, 'isolation_px': ISOLATION,
                     'mag_bins': MAG_BINS.tolist(), 'pixel_scale': PIXEL_SCALE},
        'sim_preset': dataclasses.asdict(variant) | {'depth_formula': variant.depth},
        'sim_exposure_scale': variant.exposure_time / base.exposure_time,
        'sim_true_fwhm_pix': float(np.median([s.fwhm for s in sims])),
        'real': s_real,
        'sim': s_sim,
        'comparison': {
            'sigma_ratio_mag_arcsec2': s_sim['sigma_pix_mag_arcsec2']
            - s_real['sigma_pix_mag_arcsec2'],
            'fwhm_ratio_sim_over_real': s_sim['psf_fwhm_pix_median']
            / s_real['psf_fwhm_pix_median'],
            'detections_ratio_sim_over_real': s_sim['detections_per_deg2']
            / s_real['detections_per_deg2'],
            'counts_slope_real_18_23': slope(c, np.array(s_real['counts_per_deg2_per_mag']),
                                             18, 23),
            'counts_slope_sim_18_23': slope(c, np.array(s_sim['counts_per_deg2_per_mag']),
                                            18, 23),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    figure(real, res, s_real, s_sim, variant, Path(args.figure))
    print(f'sim: sigma {s_sim["sigma_pix_adu"]:.4g} ADU/px, PSF FWHM '
          f'{s_sim["psf_fwhm_arcsec_median"]:.3f}" ({s_sim["psf_n_stars"]} stars, true '
          f'{results["sim_true_fwhm_pix"] * PIXEL_SCALE:.3f}")')
    print(json.dumps(results['comparison'], indent=2))
    print(f'wrote {out} and {args.figure}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
