# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the deep-coloring loss on hand-made label maps."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from astro_deepcolor.training.data import (  # noqa: E402
    collate,
    halo_pairs_from_labels,
)
from astro_deepcolor.training.loss import (  # noqa: E402
    DeepColoringLoss,
    assign_colors,
    colour_preferences,
    deep_coloring_loss,
    neighbour_pairs,
)


def _brute_force_prefs(probs, labels, halo_pix, halo_src, mu):
    """Reference colour preferences: a Python loop over sources."""
    p = probs.detach().numpy()
    k1 = p.shape[1]
    flat = p.transpose(0, 2, 3, 1).reshape(-1, k1)
    lab = labels.numpy().ravel()
    hp, hs = halo_pix.numpy(), halo_src.numpy()
    prefs = {}
    for k in np.unique(lab[lab > 0]):
        fp = flat[lab == k, 1:]
        crit = np.log(fp).mean(axis=0)
        halo = flat[hp[hs == k], 1:]
        if len(halo):
            crit = crit + mu * np.log(1 - halo).mean(axis=0)
        prefs[int(k)] = crit
    return prefs


def _brute_force_colors(probs, labels, halo_pix, halo_src, mu):
    """
    Reference assignment: sequential greedy colouring, largest footprint
    first (then lowest id), each source taking its preferred colour among
    those its coloured neighbours do not use.
    """
    prefs = _brute_force_prefs(probs, labels, halo_pix, halo_src, mu)
    lab = labels.numpy().ravel()
    hp, hs = halo_pix.numpy(), halo_src.numpy()
    neigh = {k: set() for k in prefs}
    for pix, k in zip(hp, hs, strict=True):
        o = int(lab[pix])
        if o > 0 and o != k and o in prefs and int(k) in prefs:
            neigh[int(k)].add(o)
            neigh[o].add(int(k))
    area = {k: int((lab == k).sum()) for k in prefs}
    colors = {}
    for k in sorted(prefs, key=lambda k: (-area[k], k)):
        used = {colors[j] for j in neigh[k] if j in colors}
        crit = prefs[k].copy()
        crit[list(used)] = -np.inf
        colors[k] = int(np.argmax(crit))
    return colors, neigh


def _random_case(seed, n_sources=30, shape=(2, 48, 48)):
    rng = np.random.default_rng(seed)
    b, h, w = shape
    labels = np.zeros(shape, np.int64)
    k = 0
    for i in range(b):
        for _ in range(n_sources // b):
            k += 1
            y, x = rng.integers(2, h - 4), rng.integers(2, w - 4)
            labels[i, y:y + rng.integers(2, 5), x:x + rng.integers(2, 5)] = k
    samples = [(np.zeros((h, w), np.float32), labels[i]) for i in range(b)]
    batch = collate(samples, halo_radius=3)
    logits = torch.from_numpy(rng.normal(0, 2, (b, 6, h, w)).astype(np.float32))
    return logits, batch


@pytest.mark.parametrize('mu', [0.0, 1.0, 5.0])
def test_colors_match_brute_force(mu):
    logits, batch = _random_case(1)
    labels = torch.from_numpy(batch['labels'])
    hpix = torch.from_numpy(batch['halo_pix'])
    hsrc = torch.from_numpy(batch['halo_src'])
    _, det = deep_coloring_loss(logits, labels, hpix, hsrc, mu=mu,
                                min_usage=0.0, return_details=True)
    ref, neigh = _brute_force_colors(torch.softmax(logits, 1), labels, hpix,
                                     hsrc, mu)
    got = dict(zip(det['source_ids'].tolist(), det['colors'].tolist(),
                   strict=True))
    # Sources partially overwritten by later ones keep their surviving pixels.
    assert got == ref
    assert len(got) > 10
    assert sum(len(v) for v in neigh.values()) > 10  # the case has groups
    # The preferences themselves match the reference.
    prefs = _brute_force_prefs(torch.softmax(logits, 1), labels, hpix, hsrc, mu)
    for k, c in got.items():
        if not neigh[k]:
            assert c == int(np.argmax(prefs[k]))


def test_neighbours_never_share_a_colour():
    # Crowded random boxes: many touching groups. Every source with fewer
    # neighbours than colours differs from all of them, whatever the
    # network currently predicts (here: colour 1 everywhere).
    rng = np.random.default_rng(3)
    for seed in range(5):
        logits, batch = _random_case(seed, n_sources=60)
        logits[:, 1] += 8.0
        labels = torch.from_numpy(batch['labels'])
        _, det = deep_coloring_loss(
            logits, labels, torch.from_numpy(batch['halo_pix']),
            torch.from_numpy(batch['halo_src']), return_details=True)
        colors, pairs = det['colors'], det['pairs']
        assert len(pairs) > 10
        deg = torch.bincount(pairs.ravel(), minlength=colors.numel())
        ok = (deg[pairs[:, 0]] < 5) & (deg[pairs[:, 1]] < 5)
        assert bool(ok.any())
        assert (colors[pairs[ok, 0]] != colors[pairs[ok, 1]]).all()
    del rng
    # Two touching sources never share a colour, even with mu = 0.
    labels, hpix, hsrc = _two_touching()
    probs = torch.full((1, 4, 16, 16), 0.02)
    probs[0, 0] = 0.94
    probs[0, :, labels[0] > 0] = torch.tensor([0.02, 0.9, 0.05, 0.03])[:, None]
    _, det = deep_coloring_loss(probs, labels, hpix, hsrc, mu=0.0,
                                from_logits=False, return_details=True)
    c1, c2 = det['colors'].tolist()
    assert c1 != c2


def test_dead_colour_still_gets_sources():
    # 40 isolated sources; colour 3 (index 2) has probability ~1e-9
    # everywhere and colour 1 is preferred everywhere. The quota gives
    # every colour at least floor(0.5 * 40 / 4) = 5 sources.
    labels = torch.zeros(1, 64, 64, dtype=torch.int64)
    k = 0
    for y in range(2, 62, 8):
        for x in range(2, 62, 12):
            k += 1
            labels[0, y:y + 2, x:x + 2] = k
    pix, src = halo_pairs_from_labels(labels[0].numpy(), 2)
    logits = torch.zeros(1, 5, 64, 64)
    logits[0, 0] = 3.0
    logits[0, 1, labels[0] > 0] = 6.0
    logits[0, 3] = -20.0
    logits += 0.1 * torch.randn(1, 5, 64, 64, generator=torch.Generator().manual_seed(0))
    _, det = deep_coloring_loss(logits, labels, torch.from_numpy(pix),
                                torch.from_numpy(src), return_details=True)
    counts = torch.bincount(det['colors'], minlength=4)
    assert k == 40
    assert len(det['pairs']) == 0
    assert counts.min() >= 5
    assert counts[2] == 5
    # Without the quota the dead colour gets nothing.
    _, det = deep_coloring_loss(logits, labels, torch.from_numpy(pix),
                                torch.from_numpy(src), min_usage=0.0,
                                return_details=True)
    assert torch.bincount(det['colors'], minlength=4)[2] == 0
    assert (det['colors'] == 0).all()


def test_quota_takes_the_least_regretful_sources():
    # Preferences by hand: 6 isolated sources all prefer colour 0; the
    # quota (min_usage=1, C=3: 2 each) moves to colour 1 the two with the
    # smallest loss of preference, and to colour 2 the next two.
    pref = torch.tensor([[0.0, -5.0, -9.0],
                         [0.0, -1.0, -9.0],
                         [0.0, -2.0, -9.0],
                         [0.0, -9.0, -0.5],
                         [0.0, -9.0, -3.0],
                         [0.0, -9.0, -9.0]])
    colors = assign_colors(pref, torch.zeros((0, 2), dtype=torch.int64),
                           min_usage=1.0)
    assert torch.bincount(colors, minlength=3).tolist() == [2, 2, 2]
    assert colors[3] == 2
    assert colors[1] == 1
    assert colors[2] == 1


def test_neighbour_pairs_unique():
    halo_src = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    owner = torch.tensor([1, 1, 0, -1, 2, 0, -1])
    pairs = neighbour_pairs(halo_src, owner)
    assert pairs.tolist() == [[0, 1], [0, 2]]


def test_per_source_weighting_by_hand():
    # Source 1: 4 px at p(colour) = 0.5; source 2: 1 px at 0.25 (with
    # min_area 1). Per source: (log 2 + log 4) / 2, not the pixel mean
    # (4 log 2 + log 4) / 5. With source weights 3 and 1 and one border
    # pixel of weight 2 in source 1 the mean follows by hand.
    labels = torch.zeros(1, 6, 6, dtype=torch.int64)
    labels[0, :2, :2] = 1
    labels[0, 4, 4] = 2
    probs = torch.zeros(1, 3, 6, 6)
    probs[0, 0] = 1.0
    probs[0, :, :2, :2] = torch.tensor([0.5, 0.5, 0.0])[:, None, None]
    probs[0, :, 4, 4] = torch.tensor([0.75, 0.25, 0.0])
    probs[0, :, 1, 1] = torch.tensor([0.75, 0.25, 0.0])  # the border pixel
    empty = torch.zeros(0, dtype=torch.int64)
    _, det = deep_coloring_loss(probs, labels, empty, empty, from_logits=False,
                                min_usage=0.0, return_details=True)
    fp1 = (3 * np.log(2) + np.log(4)) / 4
    assert float(det['fg']) == pytest.approx((fp1 + np.log(4)) / 2, rel=1e-5)
    sw = torch.zeros(1, 6, 6)
    sw[labels == 1] = 3.0
    sw[labels == 2] = 1.0
    pw = torch.ones(1, 6, 6)
    pw[0, 1, 1] = 2.0
    _, det = deep_coloring_loss(probs, labels, empty, empty, from_logits=False,
                                min_usage=0.0, source_weights=sw,
                                pixel_weights=pw, return_details=True)
    fp1 = (3 * np.log(2) + 2 * np.log(4)) / 5
    assert float(det['fg']) == pytest.approx((3 * fp1 + np.log(4)) / 4, rel=1e-5)
    # Half of it a per-pixel mean with the same weights: pixel weights
    # 3, 3, 3, 6 (source 1) and 1 (source 2).
    _, det = deep_coloring_loss(probs, labels, empty, empty, from_logits=False,
                                min_usage=0.0, source_weights=sw, pixel_weights=pw,
                                pixel_share=0.5, return_details=True)
    pix = (9 * np.log(2) + 6 * np.log(4) + np.log(4)) / 16
    assert float(det['fg']) == pytest.approx(
        0.5 * (3 * fp1 + np.log(4)) / 4 + 0.5 * pix, rel=1e-5)


def test_colour_preferences_shape():
    pref = colour_preferences(torch.zeros(3, 4), torch.tensor([0, 0, 1]),
                              torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64),
                              2, 5.0)
    assert pref.shape == (2, 4)


def test_loss_value_by_hand():
    # One 2x2 source, everything else background; uniform probabilities.
    labels = torch.zeros(1, 4, 4, dtype=torch.int64)
    labels[0, :2, :2] = 1
    probs = torch.full((1, 3, 4, 4), 1 / 3)
    loss = deep_coloring_loss(probs, labels, torch.zeros(0, dtype=torch.int64),
                              torch.zeros(0, dtype=torch.int64),
                              from_logits=False, fg_weight=0.25)
    assert float(loss) == pytest.approx(np.log(3), rel=1e-6)
    # Perfect background, source at 0.5 in its best colour.
    probs = torch.zeros(1, 3, 4, 4)
    probs[0, 0] = 1.0
    probs[0, :, :2, :2] = torch.tensor([0.2, 0.5, 0.3])[:, None, None]
    loss = deep_coloring_loss(probs, labels, torch.zeros(0, dtype=torch.int64),
                              torch.zeros(0, dtype=torch.int64),
                              from_logits=False, fg_weight=0.25)
    assert float(loss) == pytest.approx(0.25 * np.log(2), rel=1e-4)


def _two_touching():
    labels = torch.zeros(1, 16, 16, dtype=torch.int64)
    labels[0, 5:10, 3:8] = 1
    labels[0, 5:10, 8:12] = 2
    pix, src = halo_pairs_from_labels(labels[0].numpy(), 3)
    return labels, torch.from_numpy(pix), torch.from_numpy(src)


def _two_touching_probs(labels):
    """Both sources predicted in colour 1, source 1 more strongly;
    elsewhere the colours are weak."""
    probs = torch.full((1, 4, 16, 16), 0.02)
    probs[0, 0] = 0.94
    probs[0, :, labels[0] == 1] = torch.tensor([0.02, 0.9, 0.05, 0.03])[:, None]
    probs[0, :, labels[0] == 2] = torch.tensor([0.1, 0.6, 0.2, 0.1])[:, None]
    return probs


def test_touching_sources_get_different_colors_when_halo_dominates():
    labels, hpix, hsrc = _two_touching()
    # Both sources are currently predicted in colour 1; source 1 more
    # strongly. Elsewhere the colours are weak.
    probs = _two_touching_probs(labels)
    empty = (hpix, hsrc)
    _, det0 = deep_coloring_loss(probs, labels, *empty, mu=0.0,
                                 from_logits=False, return_details=True)
    # Without the halo term too: neighbours never share a colour, and the
    # larger source keeps its preferred one.
    c1, c2 = det0['colors'].tolist()
    assert c1 == 0
    assert c2 != c1
    _, det5 = deep_coloring_loss(probs, labels, *empty, mu=5.0,
                                 from_logits=False, return_details=True)
    c1, c2 = det5['colors'].tolist()
    assert c1 == 0  # the confident source keeps colour 1
    assert c2 != c1


def test_neighbour_term_by_hand():
    labels, hpix, hsrc = _two_touching()
    probs = _two_touching_probs(labels)
    base, det0 = deep_coloring_loss(probs, labels, hpix, hsrc, from_logits=False,
                                    return_details=True)
    loss, det = deep_coloring_loss(probs, labels, hpix, hsrc, from_logits=False,
                                   neighbour_weight=2.0, return_details=True)
    c1, c2 = det['colors'].tolist()
    assert c1 == 0
    assert c2 != c1
    # Source 1's halo pixels on source 2 are at p(colour 1) = 0.6, source 2's
    # halo pixels on source 1 at p(c2 + 1) = 0.05 or 0.03.
    flat_lab = labels.reshape(-1).numpy()
    pix, src = hpix.numpy(), hsrc.numpy()
    n1 = np.count_nonzero((src == 1) & (flat_lab[pix] == 2))
    n2 = np.count_nonzero((src == 2) & (flat_lab[pix] == 1))
    assert n1 > 0
    assert n2 > 0
    y2 = [0.9, 0.05, 0.03][c2]
    expected = (-np.log(1 - 0.6) - np.log(1 - y2)) / 2
    assert float(det['neighbour']) == pytest.approx(expected, rel=1e-4)
    assert float(loss - base) == pytest.approx(2.0 * expected, rel=1e-4)
    assert float(det0['neighbour']) == 0.0
    with pytest.raises(ValueError, match='neighbour_weight must be >= 0'):
        DeepColoringLoss(neighbour_weight=-1)


def test_training_separates_touching_sources():
    # Free per-pixel logits trained with the loss: the two touching
    # sources must end up in different colours, and the loss must drop.
    labels, hpix, hsrc = _two_touching()
    torch.manual_seed(0)
    logits = torch.zeros(1, 4, 16, 16)
    # Both start in colour 1, source 1 more confidently than source 2.
    logits[0, 1, labels[0] == 1] = 4.0
    logits[0, 1, labels[0] == 2] = 1.0
    logits = (logits + 0.01 * torch.randn_like(logits)).requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.1)
    crit = DeepColoringLoss(mu=5.0)
    losses = []
    for _ in range(60):
        loss = crit(logits, labels, hpix, hsrc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    colour = logits.detach()[0].argmax(0)
    c1 = torch.mode(colour[labels[0] == 1]).values.item()
    c2 = torch.mode(colour[labels[0] == 2]).values.item()
    assert c1 == 1  # the confident source keeps its colour
    assert c2 not in (0, 1)
    assert losses[-1] < 0.3 * losses[0]


def test_optimizer_steps_reduce_loss_with_unet():
    from astro_deepcolor.model.config import ModelConfig
    from astro_deepcolor.model.unet import UNet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    h = w = 32
    labels = np.zeros((2, h, w), np.int64)
    images = rng.normal(0, 1, (2, h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    k = 0
    for i in range(2):
        for cy, cx in ((8, 8), (20, 24), (24, 10)):
            k += 1
            r2 = (yy - cy) ** 2 + (xx - cx) ** 2
            images[i] += 30 * np.exp(-r2 / 8)
            labels[i][r2 <= 6] = k
    batch = collate([(images[i], labels[i]) for i in range(2)], 4)
    net = UNet(ModelConfig(width=4, depth=2, n_colors=3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    crit = DeepColoringLoss(mu=5.0)
    x = torch.from_numpy(batch['image'])
    args = [torch.from_numpy(batch[k]) for k in ('labels', 'halo_pix', 'halo_src')]
    losses = []
    for _ in range(15):
        loss = crit(net(x), *args)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_no_sources_and_no_halo():
    logits = torch.randn(2, 6, 8, 8, requires_grad=True)
    labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    empty = torch.zeros(0, dtype=torch.int64)
    loss = deep_coloring_loss(logits, labels, empty, empty)
    expected = -torch.log_softmax(logits, 1)[:, 0].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # A source without halo pairs: only the footprint term decides.
    labels[0, 2:4, 2:4] = 7
    loss, det = deep_coloring_loss(logits, labels, empty, empty,
                                   return_details=True)
    mean_logp = torch.log_softmax(logits, 1)[0, 1:, 2:4, 2:4].mean((1, 2))
    assert det['colors'].tolist() == [int(mean_logp.argmax())]
    assert torch.isfinite(loss)


def test_all_foreground_and_ignored():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.ones(1, 4, 4, dtype=torch.int64)
    empty = torch.zeros(0, dtype=torch.int64)
    loss, det = deep_coloring_loss(logits, labels, empty, empty,
                                   return_details=True)
    assert det['n_bg'] == 0
    assert torch.isfinite(loss)
    # Ignored pixels (label < 0) carry no loss at all.
    labels = torch.full((1, 4, 4), -1, dtype=torch.int64)
    labels[0, 0, 0] = 0
    loss = deep_coloring_loss(logits, labels, empty, empty)
    assert float(loss) == pytest.approx(
        float(-torch.log_softmax(logits, 1)[0, 0, 0, 0]), rel=1e-6)


def test_min_area_ignores_small_footprints():
    logits = torch.randn(1, 3, 8, 8)
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, 0, 0] = 1  # 1 px
    labels[0, 4:7, 4:7] = 2  # 9 px
    empty = torch.zeros(0, dtype=torch.int64)
    _, det = deep_coloring_loss(logits, labels, empty, empty, min_area=5,
                                return_details=True)
    assert det['source_ids'].tolist() == [2]
    assert det['n_fg'] == 9
    assert det['n_bg'] == 64 - 10


def test_many_sources():
    # Hundreds of touching and overlapping sources per image: every
    # neighbour pair still gets two colours where it can, and the terms stay
    # finite. (Its speed is not timed here: a unit test's wall clock breaks
    # on a loaded machine.)
    rng = np.random.default_rng(3)
    labels = np.zeros((4, 128, 128), np.int64)
    k = 0
    for i in range(4):
        for _ in range(300):
            k += 1
            y, x = rng.integers(0, 125, 2)
            labels[i, y:y + 3, x:x + 3] = k
    batch = collate([(np.zeros((128, 128), np.float32), labels[i])
                     for i in range(4)], 8)
    args = [torch.from_numpy(batch[k]) for k in ('labels', 'halo_pix', 'halo_src')]
    logits = torch.randn(4, 6, 128, 128)
    loss, det = deep_coloring_loss(logits, *args, neighbour_weight=1.0,
                                   return_details=True)
    assert det['source_ids'].numel() > 800
    assert torch.isfinite(loss)
    assert float(det['neighbour']) > 0
    pairs, colors = det['pairs'], det['colors']
    assert len(pairs) > 500
    # Groups larger than the 5 colours can force a shared colour; it must
    # stay rare.
    same = (colors[pairs[:, 0]] == colors[pairs[:, 1]]).float().mean()
    assert float(same) < 0.05


def test_bad_inputs():
    empty = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ValueError, match='output must be'):
        deep_coloring_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), empty, empty)
    with pytest.raises(ValueError, match='labels must have shape'):
        deep_coloring_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4),
                           empty, empty)
    with pytest.raises(ValueError, match='mu must be'):
        DeepColoringLoss(mu=-1)
    with pytest.raises(ValueError, match='fg_weight must be'):
        DeepColoringLoss(fg_weight=1.5)


def test_background_weights():
    """The background term is the weighted mean of -log y_0."""
    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(0, 1, (1, 3, 6, 6)).astype(np.float32))
    labels = torch.zeros(1, 6, 6, dtype=torch.int64)
    labels[0, 1:3, 1:3] = 1
    hpix, hsrc = (torch.from_numpy(a) for a in halo_pairs_from_labels(labels[0].numpy(), 1))
    cont = torch.zeros(1, 6, 6, dtype=torch.bool)
    cont[0, 4:, 4:] = True
    nll0 = -torch.log_softmax(logits, 1)[0, 0]
    bg = labels[0] == 0
    crit = DeepColoringLoss(mu=1.0, contaminant_weight=5.0)
    _, det = crit(logits, labels, hpix, hsrc, cont, return_details=True)
    w = torch.where(cont[0], 5.0, 1.0)[bg]
    expected = (nll0[bg] * w).sum() / w.sum()
    torch.testing.assert_close(det['bg'], expected)
    assert not torch.isclose(det['bg'], nll0[bg].mean())
    # Weight 1 (or no mask) is the plain mean.
    _, det1 = DeepColoringLoss(mu=1.0)(logits, labels, hpix, hsrc, cont,
                                       return_details=True)
    torch.testing.assert_close(det1['bg'], nll0[bg].mean())
    with pytest.raises(ValueError, match='contaminant_weight must be >= 1'):
        DeepColoringLoss(contaminant_weight=0.5)
    with pytest.raises(ValueError, match='bg_weights must have shape'):
        deep_coloring_loss(logits, labels, hpix, hsrc,
                           bg_weights=torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match='non-negative'):
        deep_coloring_loss(logits, labels, hpix, hsrc,
                           bg_weights=-torch.ones(1, 6, 6))
