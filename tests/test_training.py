# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the training data pipeline, the loop, checkpoints and resume."""

import numpy as np
import pytest
from scipy import ndimage

from astro_deepcolor.training.data import (
    IGNORE,
    collate,
    halo_pairs_from_labels,
    make_crops,
)
from astro_deepcolor.training.validation import (
    detections_from_probs,
    summarize_sweep,
)


def _brute_halo(labels, radius):
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    pairs = set()
    for k in np.unique(labels[labels > 0]):
        fp = labels == k
        halo = ndimage.binary_dilation(fp, structure=disk) & ~fp
        pairs.update((int(p), int(k)) for p in np.flatnonzero(halo))
    return pairs


def test_halo_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 50), np.int64)
    for k in range(1, 12):
        y, x = rng.integers(0, 36), rng.integers(0, 46)
        labels[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = k
    labels[0:3, 0:3] = IGNORE  # ignored pixels have no halo
    for radius in (1, 3, 8):
        pix, lab = halo_pairs_from_labels(labels, radius)
        assert set(zip(pix.tolist(), lab.tolist(), strict=True)) == \
            _brute_halo(labels, radius)


def test_halo_pairs_agree_with_simulation():
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((128, 128), regime='clean', seed=3, density=2.0)
    seg = np.asarray(sim.segmentation.data)
    pix, lab = halo_pairs_from_labels(seg, 8)
    ref_pix, ref_lab = sim.halo_pairs(radius=8)
    assert set(zip(pix.tolist(), lab.tolist(), strict=True)) == \
        set(zip(ref_pix.tolist(), ref_lab.astype(int).tolist(), strict=True))
    empty = halo_pairs_from_labels(np.zeros((5, 5), int), 3)
    assert empty[0].size == 0


def test_make_crops_and_collate():
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((256, 256), regime='contaminated', seed=4, density=2.0)
    rng = np.random.default_rng(0)
    crops = make_crops(sim, crop=64, n_crops=3, rng=rng, min_snr=3.0)
    assert len(crops) == 3
    for img, lab, con, wts in crops:
        assert img.shape == lab.shape == con.shape == wts.shape == (64, 64)
        assert ((wts > 0) == (lab > 0)).all()
        assert con.dtype == bool
        assert not con[lab != 0].any()
        assert img.dtype == np.float32
        assert np.isfinite(img).all()
    # Faint truth sources are ignored, bright ones kept.
    full = make_crops(sim, crop=256, n_crops=1, rng=rng, min_snr=3.0,
                      augment=False)[0][1]
    faint = sim.truth['label'][sim.truth['snr'] < 3.0]
    bright = sim.truth['label'][sim.truth['snr'] >= 3.0]
    assert not np.isin(faint, full).any()
    assert np.isin(bright, full).all()
    assert (full == IGNORE).any()
    # Contaminant pixels outside footprints are background.
    seg = np.asarray(sim.segmentation.data)
    cont = (np.asarray(sim.contaminants) > 0) & (seg == 0)
    assert cont.any()
    assert (full[cont] == 0).all()
    # The contaminated mask is exactly the flagged background.
    full3 = make_crops(sim, crop=256, n_crops=1, rng=rng, min_snr=3.0,
                       augment=False)[0]
    np.testing.assert_array_equal(full3[2], cont)
    batch = collate(crops, halo_radius=4)
    assert batch['image'].shape == (3, 1, 64, 64)
    assert batch['contaminated'].shape == (3, 64, 64)
    labels = batch['labels']
    # Ids are unique across the batch.
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = labels[i][labels[i] > 0], labels[j][labels[j] > 0]
            assert not np.intersect1d(a, b).size
    flat = labels.ravel()
    assert (flat[batch['halo_pix']] != batch['halo_src']).all()
    assert np.isin(batch['halo_src'], flat[flat > 0]).all()


def test_hard_negative_crops():
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((256, 256), regime='contaminated', seed=4, density=2.0)
    # With hard_fraction=1 every crop contains contaminated background
    # (it is centred on such a pixel); uniform crops of 32 px often do not.
    hard = make_crops(sim, crop=32, n_crops=20, rng=np.random.default_rng(1),
                      hard_fraction=1.0)
    assert all(c.any() for _, _, c, _ in hard)
    rand = make_crops(sim, crop=32, n_crops=20, rng=np.random.default_rng(1))
    assert (sum(c.mean() for _, _, c, _ in hard)
            > 2 * sum(c.mean() for _, _, c, _ in rand))
    # A clean image has no contaminated pixel: crops fall back to uniform.
    clean = simulate_image((128, 128), regime='clean', seed=4)
    crops = make_crops(clean, crop=32, n_crops=3, rng=np.random.default_rng(1),
                       hard_fraction=1.0)
    assert not any(c.any() for _, _, c, _ in crops)
    with pytest.raises(ValueError, match='hard_fraction'):
        make_crops(sim, crop=32, n_crops=1, rng=np.random.default_rng(1),
                   hard_fraction=1.5)


def test_blend_crops_and_weights():
    from astro_deepcolor.simulation import simulate_image
    from astro_deepcolor.training.data import border_pixels

    sim = simulate_image((256, 256), regime='contaminated', seed=5,
                         blend_groups=200)
    truth = sim.truth
    assert (truth['group'] > 0).sum() >= 10
    # Injected members are blends far more often than natural sources.
    base = simulate_image((256, 256), regime='contaminated', seed=5)
    inj = truth['group'] > 0
    assert truth['blended'][inj].mean() > 1.5 * base.truth['blended'].mean()
    # The natural population is untouched by the injection.
    nat = sim.injected[sim.injected['group'] == 0]
    np.testing.assert_allclose(np.sort(nat['x']), np.sort(base.injected['x']))
    # Crops centred on hard sources hold more blended pixels than uniform
    # crops, and hard sources carry the weight.
    rng = np.random.default_rng(2)
    hard = make_crops(sim, crop=32, n_crops=30, rng=rng, blend_fraction=1.0,
                      hard_source_weight=3.0, augment=False)
    rand = make_crops(sim, crop=32, n_crops=30, rng=np.random.default_rng(2),
                      hard_source_weight=3.0, augment=False)
    n_hard = sum((w == 3).sum() for *_, w in hard)
    n_rand = sum((w == 3).sum() for *_, w in rand)
    assert n_hard > 1.5 * n_rand
    assert {float(v) for *_, w in hard for v in np.unique(w)} <= {0.0, 1.0, 3.0}
    # Border pixels: where two labels meet, on both sides, nowhere else.
    lab = np.zeros((10, 10), int)
    lab[2:6, 1:4] = 1
    lab[2:6, 4:7] = 2
    lab[8, 8] = 3
    b = border_pixels(lab, width=1)
    assert b[2:6, 3].all()
    assert b[2:6, 4].all()
    assert not b[:, :3].any()
    assert not b[:, 5:].any()
    batch = collate([(np.zeros((10, 10), np.float32), lab)], 2, border_weight=4.0)
    b = border_pixels(lab)  # the default width, 2 px
    assert b[2:6, 2:6].all()
    assert not b[:, 1].any()
    assert set(np.unique(batch['pixel_weight'][0][b])) == {4.0}
    assert set(np.unique(batch['pixel_weight'][0][~b])) == {1.0}
    with pytest.raises(ValueError, match='blend_fraction'):
        make_crops(sim, crop=32, n_crops=1, rng=rng, blend_fraction=0.6,
                   hard_fraction=0.6)


def test_detections_from_probs():
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    # Two touching blobs in different colours, one tiny blob.
    probs[:, 5:10, 2:8] = np.array([0.1, 0.8, 0.1])[:, None, None]
    probs[:, 5:10, 8:14] = np.array([0.1, 0.1, 0.8])[:, None, None]
    probs[:, 15, 15] = np.array([0.1, 0.9, 0.0])
    segm, xy = detections_from_probs(probs, np.ones((20, 20)), 0.5, n_pixels=3)
    assert segm.max() == 2
    np.testing.assert_allclose(sorted(xy[:, 0]), [4.5, 10.5])
    np.testing.assert_allclose(xy[:, 1], [7.0, 7.0])
    # A colour flicker inside one source, below the detection threshold
    # but above the footprint level, is repaired as at inference: one
    # detection, not a match plus a false positive.
    probs[:, 6:9, 3:6] = np.array([0.3, 0.1, 0.6])[:, None, None]
    segm, xy = detections_from_probs(probs, np.ones((20, 20)), 0.8, n_pixels=3,
                                     footprint_threshold=0.5)
    assert segm.max() == 2
    assert (segm[5:10, 2:8] == segm[5, 2]).all()
    # Nothing above the threshold: an empty map, no centroid.
    segm, xy = detections_from_probs(probs, np.ones((20, 20)), 0.95)
    assert segm.max() == 0
    assert xy.shape == (0, 2)


def test_detections_from_probs_merges_peakless_segments_like_the_finder():
    # A star painted core + ring in two colours (what the colouring network
    # does to bright stars): the ring has no peak of its own, so with the
    # peak image validation counts one source, as detection does.
    yy, xx = np.mgrid[:40, :40]
    r2 = (yy - 20) ** 2 + (xx - 20) ** 2
    image = 200 * np.exp(-r2 / (2 * 3.0 ** 2))
    probs = np.zeros((3, 40, 40), np.float32)
    probs[0] = 1.0
    core, ring = r2 <= 9, (r2 > 9) & (r2 <= 49)
    probs[:, core] = np.array([0.02, 0.97, 0.01])[:, None]
    probs[:, ring] = np.array([0.02, 0.01, 0.97])[:, None]
    segm, _ = detections_from_probs(probs, image, 0.9, n_pixels=3)
    assert segm.max() == 2
    peak = ndimage.gaussian_filter(image, 1.0)
    segm, xy = detections_from_probs(probs, image, 0.9, n_pixels=3, peak_image=peak)
    assert segm.max() == 1
    np.testing.assert_allclose(xy[0], [20, 20], atol=0.05)


def test_summarize_sweep():
    counts = np.array([[9, 10, 20, 25], [8, 10, 19, 20], [5, 10, 10, 10]])
    s = summarize_sweep(counts, thresholds=(0.1, 0.5, 0.9))
    assert s['completeness'] == [0.9, 0.8, 0.5]
    assert s['contamination'] == [0.2, 0.05, 0.0]
    assert s['best_threshold'] == 0.5
    assert s['best_completeness'] == 0.8
    # Completeness at 5/10/20 % contamination and their mean (the score).
    assert s['completeness_at'] == {'5pc': 0.8, '10pc': 0.8, '20pc': 0.9}
    assert s['score'] == pytest.approx((0.8 + 0.8 + 0.9) / 3)
    never = summarize_sweep(np.array([[9, 10, 20, 40], [8, 10, 15, 20]]),
                            thresholds=(0.1, 0.5))
    assert never['best_threshold'] is None
    assert never['completeness_at'] == {'5pc': 0.0, '10pc': 0.0, '20pc': 0.0}


# ---- the loop -----------------------------------------------------------

def _configs(tmp_path, **train):
    pytest.importorskip('torch')
    from astro_deepcolor.model import ModelConfig
    from astro_deepcolor.training.train import TrainConfig

    mc = ModelConfig(width=4, depth=2, n_colors=3, halo_radius=4)
    kw = {'out_dir': str(tmp_path), 'steps': 4, 'batch_size': 2, 'crop': 64,
          'crops_per_image': 2, 'num_workers': 0, 'val_images': 0,
          'log_every': 1, 'checkpoint_every': 2, 'val_every': 100,
          'warmup_steps': 1, 'seed': 5}
    kw.update(train)
    return mc, TrainConfig(**kw)


def test_train_resume_is_exact(tmp_path):
    torch = pytest.importorskip('torch')
    from astro_deepcolor.training.train import train

    mc, tc = _configs(tmp_path / 'a')
    full = train(mc, tc, progress=False)
    assert full['step'] == 4
    mc, tc2 = _configs(tmp_path / 'b')
    assert train(mc, tc2, progress=False, max_steps=2)['step'] == 2
    resumed = train(mc, tc2, resume=True, progress=False)
    assert resumed['step'] == 4
    a = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    for k, v in a['model'].items():
        torch.testing.assert_close(v, b['model'][k], rtol=0, atol=0)
    assert a['step'] == b['step'] == 4
    assert a['config']['training']['steps_done'] == 4
    log = (tmp_path / 'b' / 'train.log').read_text()
    assert 'resumed from' in log
    assert 'step 4 loss' in log


def test_train_validation_and_export(tmp_path):
    pytest.importorskip('torch')
    pytest.importorskip('onnxscript')
    from astro_deepcolor.model import load_model
    from astro_deepcolor.training.train import train

    onnx_path = tmp_path / 'best.onnx'
    mc, tc = _configs(tmp_path, steps=2, val_images=1, val_every=2,
                      export_onnx=str(onnx_path), recipes={'clean': 1.0})
    out = train(mc, tc, progress=False)
    assert out['last_validation']['step'] == 2
    assert 'clean' in out['last_validation']
    assert (tmp_path / 'best.pt').exists()
    assert (tmp_path / 'history.json').exists()
    model = load_model(onnx_path)
    assert model.config.n_colors == 3
    assert model.config.training['steps_done'] == 2


def test_init_weights_fine_tuning(tmp_path):
    torch = pytest.importorskip('torch')
    from astro_deepcolor.model import ModelConfig
    from astro_deepcolor.training.train import train

    mc, tc = _configs(tmp_path / 'a', steps=2, val_images=1, val_every=2,
                      recipes={'contaminated': 1.0})
    train(mc, tc, progress=False)
    # Every validated step leaves a weights-only snapshot.
    snap = torch.load(tmp_path / 'a' / 'step_000002.pt', weights_only=True)
    assert snap['step'] == 2
    assert snap['config']['training']['steps_done'] == 2
    assert snap['config']['training']['seed'] == 5
    start = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)['model']
    mc, tc = _configs(tmp_path / 'b', steps=1, hard_fraction=1.0,
                      contaminant_weight=5.0, recipes={'contaminated': 1.0},
                      init_weights=str(tmp_path / 'a' / 'last.pt'), lr=1e-12,
                      warmup_steps=0, weight_decay=0.0)
    train(mc, tc, progress=False)
    state = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    # A negligible learning rate: the weights are (almost) the initial ones
    # (batch-norm running statistics do move in one training step).
    for k, v in start.items():
        if 'running_' in k or 'num_batches' in k:
            continue
        torch.testing.assert_close(state['model'][k], v, rtol=0, atol=1e-6)
    assert state['step'] == 1
    meta = state['config']['training']
    assert meta['hard_fraction'] == 1.0
    assert meta['contaminant_weight'] == 5.0
    assert 'weights initialised from' in (tmp_path / 'b' / 'train.log').read_text()
    with pytest.raises(ValueError, match='another model configuration'):
        train(ModelConfig(width=8, depth=2, n_colors=3, halo_radius=4),
              tc, progress=False)
    _, bad = _configs(tmp_path / 'c', init_weights=str(tmp_path / 'nope.pt'))
    with pytest.raises(FileNotFoundError, match='init_weights'):
        train(mc, bad, progress=False)


def test_init_weights_grows_a_shallower_network(tmp_path):
    torch = pytest.importorskip('torch')
    from astro_deepcolor.training.train import train

    mc, tc = _configs(tmp_path / 'a', steps=1)
    train(mc, tc, progress=False)
    start = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)['model']
    deep = mc.replace(depth=3)
    _, tc = _configs(tmp_path / 'b', steps=1, lr=1e-12, warmup_steps=0,
                     weight_decay=0.0, init_weights=str(tmp_path / 'a' / 'last.pt'))
    train(deep, tc, progress=False)
    state = torch.load(tmp_path / 'b' / 'last.pt', weights_only=True)
    assert state['config']['depth'] == 3
    # The old bottleneck became the last encoder; the decoders moved in by one.
    torch.testing.assert_close(state['model']['encoders.2.0.weight'],
                               start['bottleneck.0.weight'], rtol=0, atol=1e-6)
    torch.testing.assert_close(state['model']['decoders.2.3.weight'],
                               start['decoders.1.3.weight'], rtol=0, atol=1e-6)
    torch.testing.assert_close(state['model']['head.weight'],
                               start['head.weight'], rtol=0, atol=1e-6)
    assert 'grown from depth 2 to 3' in (tmp_path / 'b' / 'train.log').read_text()
    # Two levels deeper, or another width, cannot be grown.
    _, tc = _configs(tmp_path / 'c', steps=1, init_weights=str(tmp_path / 'a' / 'last.pt'))
    for other in (mc.replace(depth=4), mc.replace(depth=3, width=8)):
        with pytest.raises(ValueError, match='one level shallower'):
            train(other, tc, progress=False)


def test_resume_errors(tmp_path):
    pytest.importorskip('torch')
    from astro_deepcolor.model import ModelConfig
    from astro_deepcolor.training.train import train

    mc, tc = _configs(tmp_path, steps=1)
    with pytest.raises(FileNotFoundError, match='cannot resume'):
        train(mc, tc, resume=True, progress=False)
    train(mc, tc, progress=False)
    with pytest.raises(ValueError, match=r'model configuration .* differs'):
        train(ModelConfig(width=8, depth=2, n_colors=3, halo_radius=4), tc,
              resume=True, progress=False)


def test_load_config_and_errors(tmp_path):
    pytest.importorskip('torch')
    from pathlib import Path

    from astro_deepcolor.training.train import load_config

    root = Path(__file__).parents[1]
    mc, tc = load_config(root / 'configs' / 'default.yaml', steps=10)
    assert tc.steps == 10
    assert tc.crop % mc.tile_multiple == 0
    assert set(tc.recipes) == {'clean', 'contaminated'}
    bad = tmp_path / 'bad.yaml'
    bad.write_text('train: {stepz: 3}\n')
    with pytest.raises(ValueError, match=r"unknown train keys .*'stepz'"):
        load_config(bad)
    bad.write_text('train: {batch_size: 6, crops_per_image: 4}\n')
    with pytest.raises(ValueError, match='batch_size \\(6\\) must be a multiple'):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_config(tmp_path / 'nope.yaml')
    bad.write_text('train: {contaminant_weight: 0.5}\n')
    with pytest.raises(ValueError, match='contaminant_weight must be >= 1'):
        load_config(bad)
    bad.write_text('train: {hard_fraction: 2}\n')
    with pytest.raises(ValueError, match='hard_fraction must be in'):
        load_config(bad)
    bad.write_text('train: {blend_fraction: 0.8, hard_fraction: 0.5}\n')
    with pytest.raises(ValueError, match='blend_fraction must be in'):
        load_config(bad)
    bad.write_text('train: {min_usage: 2}\n')
    with pytest.raises(ValueError, match='min_usage must be in'):
        load_config(bad)
    # The shipped model's recipe trains from scratch with blends injected,
    # crops on blends and artefacts and every colour kept alive.
    assert not tc.init_weights
    assert tc.blend_groups > 0
    assert tc.blend_fraction > 0
    assert tc.min_usage > 0
