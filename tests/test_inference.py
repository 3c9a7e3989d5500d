# Licensed under a 3-clause BSD style license - see LICENSE.rst
import tracemalloc
import warnings

import astropy.units as u
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from photutils.segmentation import SegmentationImage, SourceCatalog
from photutils.utils.exceptions import NoDetectionsWarning

from astro_deepcolor import DeepColorSegmentation, detect_sources
from astro_deepcolor.exceptions import DeepColorWarning, ModelError
from astro_deepcolor.inference.backends import OnnxRuntimeBackend, TorchBackend
from astro_deepcolor.inference.tiling import TilePlan, default_margin
from astro_deepcolor.model.io import DEFAULT_MODEL_PATH


def _image(shape=(150, 230), n=30, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 5, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in rng.uniform(0, 1, (n, 2)) * shape:
        img += 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8)
    return img.astype(dtype)


@pytest.fixture(scope='module')
def finder(tiny_model_path):
    return DeepColorSegmentation(model=tiny_model_path, tile_shape=256)


@pytest.fixture(scope='module')
def image():
    return _image()


class TestTilePlan:
    def test_cores_partition_the_image(self):
        plan = TilePlan((301, 517), (128, 128), 24, 8)
        cover = np.zeros((301, 517), dtype=int)
        for tile in plan:
            cover[tile.core] += 1
            assert all(o % 8 == 0 for o in tile.window_origin)
        assert_array_equal(cover, 1)
        assert plan.window_shape[0] % 8 == 0
        assert plan.window_shape[0] <= 128

    def test_small_image_one_small_tile(self):
        plan = TilePlan((10, 13), (512, 512), 24, 8)
        assert len(plan) == 1
        assert plan.window_shape == (64, 64)

    def test_too_small_tile(self):
        with pytest.raises(ValueError, match='too small for the context margin'):
            TilePlan((100, 100), (48, 48), 24, 8)

    def test_default_margin_covers_unet_reach(self):
        # depth 3 U-Net: one-sided reach 7 * 2**3 - 5 = 51 px.
        assert default_margin(96, 8) == 56


class TestParameters:
    def test_repr_and_resolved_backend(self, finder, tiny_model_path):
        text = repr(finder)
        assert text.startswith('DeepColorSegmentation(threshold=0.5, n_pixels=5')
        assert str(tiny_model_path) in text
        assert 'tile_shape=(256, 256)' in text
        assert finder.backend_name == 'onnxruntime'
        assert finder.device_name == 'cpu'
        assert 'CPUExecutionProvider' in finder.backend_description

    @pytest.mark.parametrize(('kwargs', 'error', 'match'), [
        ({'threshold': 1.2}, ValueError, r'threshold is the probability, in \(0, 1\].*got 1.2'),
        ({'threshold': 'high'}, ValueError,
         "threshold 'high' is not an operating point of the model"),
        ({'n_pixels': 0}, ValueError, 'n_pixels must be an integer >= 1, got 0'),
        ({'n_pixels': 2.5}, TypeError, 'n_pixels must be an integer'),
        ({'connectivity': 6}, ValueError, 'connectivity must be one of 4, 8; got 6'),
        ({'backend': 'tensorflow'}, ValueError, "backend must be one of .*got 'tensorflow'"),
        ({'device': 'tpu'}, ValueError, "device must be one of .*got 'tpu'"),
        ({'tile_shape': 40}, ValueError, 'tile_shape must be at least'),
        ({'overlap': 5}, ValueError, 'overlap must be a non-negative multiple'),
        ({'batch_size': 0}, ValueError, 'batch_size must be an integer >= 1'),
        ({'model': 3}, TypeError, 'model must be None'),
    ])
    def test_bad_parameters(self, tiny_model_path, kwargs, error, match):
        kwargs.setdefault('model', tiny_model_path)
        with pytest.raises(error, match=match):
            DeepColorSegmentation(**kwargs)

    def test_missing_model_file(self, tmp_path):
        with pytest.raises(ModelError, match='does not exist'):
            DeepColorSegmentation(model=tmp_path / 'nope.onnx')

    def test_cuda_unavailable_is_an_error(self, tiny_model_path):
        finder = DeepColorSegmentation(model=tiny_model_path,
                                       backend='onnxruntime', device='cuda')
        with pytest.raises(ValueError, match='onnxruntime-gpu'):
            _ = finder.backend_name


class TestModelDefaults:
    """The finder's defaults come from the model file's metadata."""

    @pytest.fixture(scope='class')
    def calibrated(self, tiny_model_path):
        from astro_deepcolor.model import LoadedModel, load_model

        plain = load_model(tiny_model_path)
        config = plain.config.replace(
            default_threshold=0.7, footprint_threshold=0.45,
            operating_points={'5%': 0.7, '1%': 0.9},
            default_operating_point='5%')
        return LoadedModel(plain.path, plain.onnx_bytes, config)

    def test_defaults_from_metadata(self, calibrated):
        finder = DeepColorSegmentation(model=calibrated)
        assert finder.threshold == 0.7
        assert finder.footprint_threshold == 0.45
        assert finder.operating_point is None

    def test_operating_point_by_name(self, calibrated, image):
        finder = DeepColorSegmentation('1%', model=calibrated, tile_shape=256)
        assert finder.threshold == 0.9
        assert finder.operating_point == '1%'
        explicit = DeepColorSegmentation(0.9, model=calibrated, tile_shape=256)
        assert_array_equal(finder(image).data, explicit(image).data)
        probs = finder.predict(image)
        assert_array_equal(finder.segment(probs, threshold='5%').data,
                           finder.segment(probs, threshold=0.7).data)

    def test_unknown_name_lists_the_names(self, calibrated):
        with pytest.raises(ValueError, match=r"'10%' is not an operating "
                           r"point.*'1%', '5%'"):
            DeepColorSegmentation('10%', model=calibrated)

    def test_explicit_settings_win(self, calibrated):
        finder = DeepColorSegmentation(0.6, model=calibrated,
                                       footprint_threshold=None)
        assert finder.threshold == 0.6
        assert finder.footprint_threshold is None


class TestTiling:
    def test_tiled_equals_untiled(self, tiny_model_path, image):
        # 64 px tiles: cores of 16 px, ~150 tiles over a 150 x 230 image.
        small = DeepColorSegmentation(model=tiny_model_path, tile_shape=64,
                                      batch_size=7)
        big = DeepColorSegmentation(model=tiny_model_path, tile_shape=512)
        p_small = small.predict(image)
        p_big = big.predict(image)
        assert p_small.shape == (4, *image.shape)
        assert p_small.dtype == np.float32
        assert_allclose(p_small, p_big, atol=1e-5)
        s_small = small(image)
        s_big = big(image)
        assert s_small.n_labels > 5
        assert_array_equal(s_small.data, s_big.data)
        # sources straddling tile boundaries are single labels
        cy, cx = TilePlan(image.shape, (64, 64), small.overlap,
                          small.config.tile_multiple).core_shape
        assert cx < 30
        straddle = [sl[1].start // cx != (sl[1].stop - 1) // cx
                    or sl[0].start // cy != (sl[0].stop - 1) // cy
                    for sl in s_small.slices]
        assert sum(straddle) >= 3

    def test_too_small_overlap_changes_result(self, tiny_model_path, image):
        with pytest.warns(DeepColorWarning, match='smaller than the receptive'):
            cut = DeepColorSegmentation(model=tiny_model_path, tile_shape=64,
                                        overlap=4)
        ref = DeepColorSegmentation(model=tiny_model_path, tile_shape=512)
        assert np.abs(cut.predict(image) - ref.predict(image)).max() > 1e-3

    def test_call_equals_segment_of_predict(self, finder, image):
        segm = finder(image)
        again = finder.segment(finder.predict(image))
        assert_array_equal(segm.data, again.data)
        assert_allclose(segm.info['detection_probability'],
                        again.info['detection_probability'], atol=1e-3)
        # re-thresholding without the network
        higher = finder.segment(finder.predict(image), threshold=0.9)
        assert 0 < np.count_nonzero(higher.data) < np.count_nonzero(segm.data)

    def test_streaming_keeps_only_compact_maps(self, finder):
        # While tiles stream through the network, __call__ keeps a uint8
        # colour and a float16 probability per pixel (allocated up front)
        # and nothing image-sized; predict fills the float32 cube.
        from astro_deepcolor.inference.finder import _prepare
        from astro_deepcolor.postprocessing import classify_pixels

        image = _image((1024, 1024), n=100)
        data, bad = _prepare(image, None)
        background, rms = finder.estimate_background(image)
        colour = np.zeros(image.shape, np.uint8)
        p_fg = np.zeros(image.shape, np.float16)

        def sink(core, probs):
            classify_pixels(probs, 0.5, bad[core], out=(colour[core], p_fg[core]))

        tracemalloc.start()
        finder._infer(data, bad, background, rms, sink, {})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        cube_bytes = 4 * finder.config.n_outputs * image.size
        assert peak < 0.25 * cube_bytes
        assert colour.any()


class TestInputs:
    def test_masked_and_nonfinite_pixels_never_in_sources(self, finder, image):
        segm = finder(image)
        mask = segm.data > 0
        mask[:, :100] = False
        bad = image.copy()
        bad[10:20, 150:160] = np.nan
        bad[30, 30] = np.inf
        out = finder(bad, mask=mask)
        assert not np.any(out.data[mask])
        assert not np.any(out.data[10:20, 150:160])
        assert out.data[30, 30] == 0
        probs = finder.predict(bad, mask=mask)
        assert_array_equal(probs[0][mask], 1.0)

    def test_masked_array(self, finder, image):
        mask = np.zeros(image.shape, dtype=bool)
        mask[:, 100:] = True
        a = finder(np.ma.MaskedArray(image, mask=mask))
        b = finder(image, mask=mask)
        assert_array_equal(a.data, b.data)
        assert not a.data[:, 100:].any()

    def test_big_endian_integer_and_quantity(self, finder, image):
        ref = finder(image)
        assert_array_equal(finder(image.astype('>f4')).data, ref.data)
        assert_array_equal(finder(image * u.adu).data, ref.data)
        as_int = finder(np.round(image).astype(np.int32))
        assert isinstance(as_int, SegmentationImage)
        assert abs(as_int.n_labels - ref.n_labels) <= 2

    def test_image_smaller_than_a_tile(self, finder):
        small = _image((7, 11), n=1)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NoDetectionsWarning)
            out = finder(small)
        assert out is None or out.shape == (7, 11)
        assert finder.predict(small).shape == (4, 7, 11)

    def test_constant_and_all_masked_images(self, finder):
        with pytest.warns(NoDetectionsWarning, match='No sources were found'):
            assert finder(np.full((50, 60), np.nan)) is None
        # A constant image has no sources (it used to come out as one
        # image-sized source: the network reads flat input as signal).
        with pytest.warns(NoDetectionsWarning, match='No sources were found'):
            assert finder(np.full((50, 60), 7.0)) is None
        probs = finder.predict(np.ones((50, 60)), mask=np.ones((50, 60), bool))
        assert_array_equal(probs[0], 1.0)

    def test_blank_padding_holds_no_sources(self, finder, image):
        padded = np.zeros((image.shape[0], image.shape[1] + 48), np.float32)
        padded[:, 48:] = image
        segm = finder(padded)
        assert not segm.data[:, :48].any()
        # and the sources of the image are still found
        assert segm.n_labels >= 0.8 * finder(image).n_labels

    def test_sky_noise_depends_on_global_position_only(self):
        from astro_deepcolor.preprocessing import sky_noise

        big = sky_noise(-8, -8, (64, 80))
        assert_array_equal(sky_noise(4, 10, (20, 30)), big[12:32, 18:48])
        assert abs(big.mean()) < 0.1
        assert 0.9 < big.std() < 1.1

    def test_flat_pixels_keep_saturated_plateaus(self):
        from astro_deepcolor.preprocessing import flat_pixels

        rng = np.random.default_rng(3)
        data = rng.normal(100.0, 5.0, (80, 80)).astype(np.float32)
        data[:, :10] = 0.0            # blank padding
        data[40:44, 40:44] = 65535.0  # saturated core
        flat = flat_pixels(data)
        assert flat[:, :10].all()
        assert not flat[:, 11:].any()

    @pytest.mark.parametrize(('data', 'error', 'match'), [
        (np.zeros((3, 20, 20)), ValueError,
         r'data must be a 2D array, got an array of shape \(3, 20, 20\)'),
        (np.zeros((0, 5)), ValueError, r'data must not be empty, got shape \(0, 5\)'),
        (np.zeros(5), ValueError, 'data must be a 2D array'),
        (np.zeros((5, 5), dtype=complex), TypeError, 'data must be a real numeric'),
        (np.array([['a']]), TypeError, 'data must be a real numeric'),
        (None, TypeError, 'data must be a 2D array, got None'),
    ])
    def test_bad_data(self, finder, data, error, match):
        with pytest.raises(error, match=match):
            finder(data)

    def test_bad_mask_shape(self, finder, image):
        with pytest.raises(ValueError, match='mask must have the same shape as data'):
            finder(image, mask=np.zeros((3, 3), bool))

    def test_segment_checks_channels(self, finder):
        with pytest.raises(ValueError, match=r'probs must have shape \(n_colors \+ 1 = 4'):
            finder.segment(np.zeros((6, 10, 10), np.float32))


class TestBackends:
    def test_torch_matches_onnxruntime(self, finder):
        pytest.importorskip('torch')
        x = np.random.default_rng(2).normal(size=(2, 1, 64, 96)).astype('f4')
        ort = OnnxRuntimeBackend(finder.model).run(x)
        torch = TorchBackend(finder.model).run(x)
        assert_allclose(torch, ort, atol=1e-5)

    def test_torch_builds_the_unet_of_the_stored_config(self, tiny_model_path):
        """The shipped file's folded BatchNorm biases load by name; a file
        whose weights do not fit its configuration is refused."""
        pytest.importorskip('torch')
        from astro_deepcolor.model import LoadedModel, load_model
        from astro_deepcolor.model.unet import UNet

        shipped = load_model()
        backend = TorchBackend(shipped)
        assert isinstance(backend._module, UNet)
        assert backend._module.config == shipped.config
        x = np.random.default_rng(3).normal(0, 3, (1, 1, 64, 64)).astype('f4')
        assert_allclose(backend.run(x), OnnxRuntimeBackend(shipped).run(x),
                        atol=1e-5)
        tiny = load_model(tiny_model_path)
        wrong = LoadedModel(tiny.path, tiny.onnx_bytes,
                            tiny.config.replace(width=8))
        with pytest.raises(ModelError, match='weights do not match its '
                           'configuration'):
            TorchBackend(wrong)

    def test_torch_backend_end_to_end(self, tiny_model_path, finder, image):
        pytest.importorskip('torch')
        tf = DeepColorSegmentation(model=tiny_model_path, backend='torch',
                                   tile_shape=256)
        assert tf.backend_name == 'torch'
        assert tf.device_name == 'cpu'
        assert_array_equal(tf(image).data, finder(image).data)

    def test_half_precision_needs_cuda(self, tiny_model_path):
        pytest.importorskip('torch')
        tf = DeepColorSegmentation(model=tiny_model_path, backend='torch',
                                   device='cpu', precision='float16')
        with pytest.raises(ValueError, match='only supported on CUDA'):
            _ = tf.backend_name

    def test_onnxruntime_intra_op_threads(self, finder):
        backend = OnnxRuntimeBackend(finder.model)
        import os
        assert backend.n_threads == len(os.sched_getaffinity(0))

    def test_used_finder_pickles(self, tiny_model_path, image):
        import pickle

        finder = DeepColorSegmentation(model=tiny_model_path, n_threads=1)
        first = finder(image)  # builds the onnxruntime session
        copy = pickle.loads(pickle.dumps(finder))
        assert '_runner' not in copy.__dict__
        assert_array_equal(copy(image).data, first.data)

    def test_n_threads_reaches_the_session(self, tiny_model_path, image):
        one = DeepColorSegmentation(model=tiny_model_path, backend='onnxruntime',
                                    n_threads=1)
        assert one.backend_description.endswith('1 threads)')
        default = DeepColorSegmentation(model=tiny_model_path, backend='onnxruntime')
        assert_array_equal(one(image).data, default(image).data)
        with pytest.raises(ValueError, match='n_threads must be an integer >= 1, got 0'):
            DeepColorSegmentation(model=tiny_model_path, n_threads=0)


class TestDropIn:
    def test_detect_sources_matches_finder(self, tiny_model_path, finder, image):
        segm = detect_sources(image, 0.5, 5, model=tiny_model_path)
        assert_array_equal(segm.data, finder(image).data)
        stricter = detect_sources(image, 0.5, 8, model=tiny_model_path)
        assert 0 < stricter.n_labels < segm.n_labels
        four = detect_sources(image, 0.5, 5, connectivity=4,
                              model=tiny_model_path)
        assert np.count_nonzero(four.data) <= np.count_nonzero(segm.data)

    def test_detect_sources_no_detections(self, tiny_model_path, image):
        with pytest.warns(NoDetectionsWarning):
            assert detect_sources(image, 1.0, 10**6, model=tiny_model_path) is None

    def test_photutils_workflow(self, finder, image):
        segm = finder(image)
        cat = SourceCatalog(image - np.median(image), segm)
        assert len(cat) == segm.n_labels
        assert segm.max_label + 1 == segm.cmap.N
        assert 'network' in segm.info['timings']


@pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(),
                    reason='the shipped model has not been trained yet')
def test_shipped_model_finds_bright_sources():
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((256, 256), regime='clean', seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm = detect_sources(sim.data, 0.5, 5)
    assert segm is not None
    bright = sim.truth[sim.truth['snr'] > 50]
    found = [segm.data[round(y), round(x)] > 0
             for x, y in zip(bright['x'], bright['y'], strict=True)]
    assert np.mean(found) > 0.8


class TestFlips:
    """``flips=True``: foreground probability averaged over four flips."""

    class _Orientation:
        """A fake network whose background probability is the input's
        left-right gradient sign, so each flip sees something else."""

        def run(self, batch):
            n, _, h, w = batch.shape
            ramp = np.broadcast_to(np.linspace(0.1, 0.9, w, dtype=np.float32), (n, h, w))
            out = np.empty((n, 3, h, w), np.float32)
            # background 0.1 .. 0.9 left to right whatever the input; the
            # two colours share the rest 3:1
            out[:, 0] = ramp
            out[:, 1] = 0.75 * (1 - ramp)
            out[:, 2] = 0.25 * (1 - ramp)
            return out

    def test_average_by_hand(self):
        from astro_deepcolor.inference.finder import run_flipped

        x = np.zeros((2, 1, 4, 5), np.float32)
        probs = run_flipped(self._Orientation(), x)
        ramp = np.linspace(0.1, 0.9, 5)
        # unflipped and up-down see the ramp, the two left-right flips
        # see it reversed: the mean is the same 0.5 everywhere.
        expected_bg = (2 * ramp + 2 * ramp[::-1]) / 4
        assert_allclose(probs[:, 0], np.broadcast_to(expected_bg, (2, 4, 5)), atol=1e-6)
        # colours keep the unflipped pass's 3:1 shares of the new foreground
        assert_allclose(probs[:, 1], 0.75 * (1 - probs[:, 0]), atol=1e-6)
        assert_allclose(probs[:, 2], 0.25 * (1 - probs[:, 0]), atol=1e-6)
        assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)

    def test_zero_colour_probability_gets_uniform_shares(self):
        from astro_deepcolor.inference.finder import run_flipped

        class Runner:
            calls = 0

            def run(self, batch):
                out = np.zeros((batch.shape[0], 3, *batch.shape[2:]), np.float32)
                out[:, 0] = 1.0 if self.calls == 0 else 0.0
                out[:, 1] = 0.0 if self.calls == 0 else 1.0
                self.calls += 1
                return out

        probs = run_flipped(Runner(), np.zeros((1, 1, 4, 4), np.float32))
        assert_allclose(probs[0, 0], 0.25)
        assert_allclose(probs[0, 1:], 0.375)
        assert np.isfinite(probs).all()

    def test_tiling_independent_and_colours_kept(self, tiny_model_path, image):
        small = DeepColorSegmentation(model=tiny_model_path, tile_shape=64,
                                      batch_size=3, flips=True, threshold=0.5)
        big = DeepColorSegmentation(model=tiny_model_path, tile_shape=512,
                                    flips=True, threshold=0.5)
        plain = DeepColorSegmentation(model=tiny_model_path, tile_shape=512,
                                      threshold=0.5)
        p_small, p_big, p_plain = (f.predict(image) for f in (small, big, plain))
        assert_allclose(p_small, p_big, atol=1e-5)
        assert_allclose(p_big.sum(axis=0), 1.0, atol=1e-5)
        # the average differs from one pass, the colour of each pixel does not
        assert np.abs(p_big[0] - p_plain[0]).max() > 1e-3
        assert_array_equal(p_big[1:].argmax(axis=0), p_plain[1:].argmax(axis=0))
        # the detection threshold applies to the averaged probability
        t = float(np.quantile(1 - p_big[0], 0.95))
        at_t = DeepColorSegmentation(t, model=tiny_model_path, tile_shape=512,
                                     flips=True)
        segm = at_t(image)
        assert segm.info['flips'] is True
        assert segm.n_labels >= 3
        assert_array_equal(segm.data, at_t.segment(
            p_big, peak_image=at_t.peak_image(image)).data)

    def test_operating_points_with_flips(self, tiny_model_path):
        from astro_deepcolor.inference.finder import resolve_threshold
        from astro_deepcolor.model import LoadedModel, load_model

        plain = load_model(tiny_model_path)
        config = plain.config.replace(
            default_threshold=0.7, operating_points={
                '5%': 0.7, '1%': 0.9, '5%+flips': 0.6, '1%+flips': 0.8},
            default_operating_point='5%')
        model = LoadedModel(plain.path, plain.onnx_bytes, config)
        assert DeepColorSegmentation(model=model, flips=True).threshold == 0.6
        assert DeepColorSegmentation('1%', model=model, flips=True).threshold == 0.8
        assert DeepColorSegmentation(0.55, model=model, flips=True).threshold == 0.55
        assert DeepColorSegmentation(model=model).threshold == 0.7
        assert resolve_threshold('1%+flips', config, flips=True) == 0.8
        bare = plain.config.replace(default_threshold=0.7, operating_points={'5%': 0.7},
                                    default_operating_point='5%')
        with pytest.raises(ValueError, match=r"no operating point '5%\+flips' "
                           r'calibrated for flips=True'):
            resolve_threshold(None, bare, flips=True)

    def test_flips_must_be_bool(self, tiny_model_path):
        with pytest.raises(TypeError, match="flips must be True or False, got 'yes'"):
            DeepColorSegmentation(model=tiny_model_path, flips='yes')
