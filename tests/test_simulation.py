# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest
from photutils.segmentation import SegmentationImage

from astro_deepcolor.simulation import (
    CONTAMINANT_FLAGS,
    PRESETS,
    generate_dataset,
    halo_pairs,
    load_recipe,
    read_simulation,
    recipe_image,
    simulate_image,
)
from astro_deepcolor.simulation.profiles import PSFModel, galaxy_stamp


@pytest.fixture(scope='module')
def clean():
    return simulate_image((256, 320), regime='clean', seed=11, density=2.0)


@pytest.fixture(scope='module')
def dirty():
    return simulate_image((256, 256), regime='contaminated', seed=5, density=2.0)


class TestTruth:
    def test_types_and_shapes(self, clean):
        assert clean.data.shape == (256, 320)
        for arr in (clean.data, clean.noiseless, clean.background, clean.rms):
            assert arr.dtype == np.float32
            assert arr.shape == clean.shape
        assert isinstance(clean.segmentation, SegmentationImage)
        assert clean.contaminants.dtype == np.uint16
        for col in ('label', 'x', 'y', 'flux', 'mag', 'kind', 'snr', 'area',
                    'radius', 'blended', 'saturated'):
            assert col in clean.truth.colnames
        assert set(clean.truth['kind']) <= {'star', 'galaxy'}

    def test_labels_match_footprints(self, clean, dirty):
        for sim in (clean, dirty):
            labels = np.array(sim.truth['label'])
            assert np.array_equal(np.sort(labels), sim.segmentation.labels)
            assert np.array_equal(labels, np.arange(1, len(labels) + 1))
            areas = np.bincount(sim.segmentation.data.ravel(),
                                minlength=labels.max() + 1)[1:]
            assert np.array_equal(areas, np.array(sim.truth['area']))

    def test_noiseless_is_sum_of_sources(self, clean):
        # Re-render every injected source alone and sum the stamps.
        sim = simulate_image((96, 96), regime='clean', seed=3, density=3.0)
        assert len(sim.injected) > 5
        total = sim.injected['flux'].sum()
        assert np.isclose(sim.noiseless.sum(), total, rtol=1e-5)
        # and the data is sky + sources + noise: the residual is noise-like
        resid = (sim.data - sim.background - sim.noiseless) / np.sqrt(
            sim.rms**2 + sim.noiseless / sim.preset.gain)
        assert abs(resid.mean()) < 0.05
        assert 0.9 < resid.std() < 1.1

    def test_footprint_definition(self, clean):
        # Every footprint pixel has noise-free signal above the level, and
        # the total signal inside footprints is most of the light.
        seg = clean.segmentation.data
        level = clean.meta['footprint_level'] * clean.rms
        assert np.all(clean.noiseless[seg > 0] > level[seg > 0])
        assert clean.noiseless[seg > 0].sum() > 0.8 * clean.noiseless.sum()

    def test_positions_inside_footprints(self, clean):
        # The centre of bright, isolated sources lies in its own footprint.
        t = clean.truth[(clean.truth['snr'] > 20) & ~clean.truth['blended']]
        assert len(t) > 3
        seg = clean.segmentation.data
        ny, nx = seg.shape
        for row in t:
            iy, ix = round(row['y']), round(row['x'])
            if 0 <= iy < ny and 0 <= ix < nx:
                assert seg[iy, ix] == row['label']

    def test_snr_and_mag_consistent(self, clean):
        t = clean.truth
        bright = t['mag'] < np.median(t['mag'])
        assert np.median(t['snr'][bright]) > np.median(t['snr'][~bright])
        assert np.all(t['snr'] > 0)

    def test_halo_disjoint_from_own_footprint(self, dirty):
        pix, lab = dirty.halo_pairs(radius=6)
        seg = dirty.segmentation.data.ravel()
        assert pix.size > 0
        assert not np.any(seg[pix] == lab)
        # every labelled source gets a halo
        assert set(np.unique(lab)) == set(dirty.segmentation.labels)

    def test_halo_ring_geometry(self):
        seg = np.zeros((21, 21), int)
        seg[10, 10] = 1
        pix, lab = halo_pairs(seg, radius=2)
        assert set(lab) == {1}
        iy, ix = np.unravel_index(pix, seg.shape)
        d2 = (iy - 10) ** 2 + (ix - 10) ** 2
        assert np.all((d2 >= 1) & (d2 <= 4))
        assert pix.size == 12  # disk of radius 2 (13 px) minus the centre

    def test_blended_flag(self):
        sim = simulate_image((256, 256), regime='clean', seed=2, density=6.0)
        t = sim.truth
        assert t['blended'].any()
        assert (~t['blended']).any()
        seg = sim.segmentation.data
        # a source whose final footprint touches another label is blended
        from scipy import ndimage
        for row in t[:40]:
            m = seg == row['label']
            ring = ndimage.binary_dilation(m) & ~m
            if np.any(seg[ring] > 0):
                assert row['blended']


class TestContaminants:
    def test_clean_has_none(self, clean):
        assert not clean.contaminants.any()
        assert not clean.artefacts.any()

    def test_every_class_appears(self):
        seen = 0
        for seed in range(8):
            sim = simulate_image((256, 256), regime='contaminated', seed=seed)
            seen |= int(np.bitwise_or.reduce(sim.contaminants, axis=None))
        missing = [k for k, b in CONTAMINANT_FLAGS.items() if not seen & b]
        assert not missing

    def test_saturation_clips(self, dirty):
        sat = (dirty.contaminants & CONTAMINANT_FLAGS['saturation']) > 0
        if sat.any():
            assert np.allclose(dirty.data[sat], dirty.preset.saturation)
        assert dirty.data.max() <= dirty.preset.saturation


class TestDeterminism:
    def test_same_seed_same_arrays(self):
        a = simulate_image(128, regime='contaminated', seed=42)
        b = simulate_image(128, regime='contaminated', seed=42)
        for name in ('data', 'noiseless', 'background', 'rms', 'contaminants'):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert np.array_equal(a.segmentation.data, b.segmentation.data)

    def test_different_seed_differs(self):
        a = simulate_image(128, seed=1)
        b = simulate_image(128, seed=2)
        assert not np.array_equal(a.data, b.data)


class TestValidation:
    @pytest.mark.parametrize('shape', [0, -5, (0, 10), (10, -1)])
    def test_bad_shape_value(self, shape):
        with pytest.raises(ValueError, match='shape'):
            simulate_image(shape)

    @pytest.mark.parametrize('shape', ['big', (1.5, 10), (1, 2, 3)])
    def test_bad_shape_type(self, shape):
        with pytest.raises(TypeError, match='shape'):
            simulate_image(shape)

    def test_bad_regime(self):
        with pytest.raises(ValueError, match="regime must be one of 'clean', "):
            simulate_image(32, regime='dirty')

    def test_bad_preset(self):
        with pytest.raises(ValueError, match='preset must be'):
            simulate_image(32, preset='lsst')

    @pytest.mark.parametrize('seed', [1.5, '3', None])
    def test_bad_seed_type(self, seed):
        with pytest.raises(TypeError, match='seed must be a non-negative integer'):
            simulate_image(32, seed=seed)

    def test_negative_seed(self):
        with pytest.raises(ValueError, match='seed must be'):
            simulate_image(32, seed=-1)

    def test_numpy_int_seed_ok(self):
        sim = simulate_image(32, seed=np.int64(4))
        assert sim.meta['seed'] == 4


class TestPresetsAndProfiles:
    @pytest.mark.parametrize('name', sorted(PRESETS))
    def test_preset_depth_plausible(self, name):
        p = PRESETS[name]
        assert 23 < p.depth < 26.5
        assert np.isclose(p.adu_to_mag(p.mag_to_adu(22.0)), 22.0)

    def test_psf_fwhm_and_normalisation(self):
        psf = PSFModel(4.0, 3.0, aureole_fraction=0.0)
        stamp = psf.stamp(30)
        assert np.isclose(stamp.sum(), 1.0, atol=2e-3)
        prof = stamp[30]
        above = np.nonzero(prof >= prof.max() / 2)[0]
        # half-maximum width of the pixelised profile ~ FWHM
        assert 3.0 <= above.size <= 5.0

    def test_galaxy_flux_and_centroid(self):
        psf = PSFModel(4.0, 3.0)
        comp = [{'kind': 'sersic', 'frac': 1.0, 'n': 1.0, 're': 3.0, 'q': 0.5, 'pa': 0.3}]
        st = galaxy_stamp(20, 0.3, -0.2, flux=100.0, components=comp,
                          psf_kernel=psf.kernel)
        assert np.isclose(st.sum(), 100.0)
        yy, xx = np.mgrid[-20:21, -20:21]
        assert np.isclose((st * xx).sum() / 100, 0.3, atol=0.05)
        assert np.isclose((st * yy).sum() / 100, -0.2, atol=0.05)


class TestRecipes:
    def test_load_and_params(self):
        r = load_recipe('contaminated')
        assert r.regime == 'contaminated'
        assert r.n_images('test') > 10
        assert r.image_params(123) == r.image_params(123)
        assert set(load_recipe('clean').splits) == {'train', 'validation', 'test'}

    def test_splits_disjoint(self):
        seeds = []
        for name in ('clean', 'contaminated'):
            r = load_recipe(name)
            for split in ('train', 'validation', 'test'):
                seeds.append(set(r.seeds(split)))
        for i, a in enumerate(seeds):
            for b in seeds[i + 1:]:
                assert not a & b

    def test_bad_recipe(self, tmp_path):
        with pytest.raises(ValueError, match='recipe must be one of'):
            load_recipe('nope')
        bad = tmp_path / 'bad.yaml'
        bad.write_text('name: x\n')
        with pytest.raises(ValueError, match='is not a valid recipe'):
            load_recipe(bad)

    def test_generate_roundtrip_and_resume(self, tmp_path):
        paths = generate_dataset('clean', 'test', tmp_path, n_images=2, n_jobs=1,
                                 progress_bar=False)
        assert len(paths) == 2
        assert all(p.exists() for p in paths)
        d = read_simulation(paths[0])
        sim = recipe_image('clean', load_recipe('clean').seeds('test')[0])
        assert np.array_equal(d['data'], sim.data)
        assert np.array_equal(d['segmentation'].data, sim.segmentation.data)
        assert len(d['truth']) == len(sim.truth)
        assert d['meta']['seed'] == sim.meta['seed']
        mtime = paths[0].stat().st_mtime_ns
        generate_dataset('clean', 'test', tmp_path, n_images=2, n_jobs=1,
                         progress_bar=False)
        assert paths[0].stat().st_mtime_ns == mtime  # kept, not rewritten


class TestCLI:
    def test_simulate_single_and_refuse_overwrite(self, tmp_path, capsys):
        from astro_deepcolor.cli import main

        args = ['simulate', '--shape', '64', '64', '--seed', '2', '--out', str(tmp_path)]
        assert main(args) == 0
        files = list(tmp_path.glob('*.fits'))
        assert len(files) == 1
        assert main(args) == 2
        assert 'exists' in capsys.readouterr().err
        assert main([*args, '--overwrite']) == 0


@pytest.mark.parametrize('shape', [(128, 128), (256, 256)])
def test_small_contaminated_images_are_not_saturated(shape):
    # Fringes on small images used to normalise a powerless field and
    # fill the whole image with saturated pixels.
    for seed in range(3):
        sim = simulate_image(shape, regime='contaminated', seed=seed)
        sky = np.median(sim.background)
        assert abs(np.median(sim.data) - sky) < 20 * np.median(sim.rms)
        assert np.mean(sim.data >= 30000.0) < 0.05
        assert np.all(np.isfinite(sim.data))
