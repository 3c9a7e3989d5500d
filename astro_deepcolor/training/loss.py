# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The deep-coloring loss (Kulikov et al. 2018), vectorised over sources.

For every source k with footprint F_k and halo H_k (the footprint dilated
by ``halo_radius`` pixels, minus the footprint), the preference for colour
c is, without gradient,

    s_k(c) = mean_{p in F_k} log y_c(p)  +  mu * mean_{p in H_k} log(1 - y_c(p))

Kulikov et al. give each source ``argmax_c s_k(c)``. On astronomical
fields that rule fails in two ways (measured, see the model card): most
sources have no neighbour, so they all take the colour the network
already prefers and the other colours die within ~100 steps (a dead
colour, log y ~ -16, never wins again); and two touching neighbours often
prefer the same colour, so the loss rewards painting a pair one colour.
The assignment here is therefore:

1. **Neighbours never share a colour.** Two sources are neighbours when
   one's halo covers a pixel of the other's footprint. Connected groups
   of neighbours are coloured greedily, in parallel rounds (Jones and
   Plassmann): a source picks its preferred colour among those its
   already-coloured neighbours do not use once every uncoloured
   neighbour with a higher priority (the larger footprint, i.e. usually
   the brighter source) has picked. With C colours a source with fewer
   than C neighbours always finds a free colour; beyond that it takes
   the colour least used by its neighbours.
2. **Every colour stays alive.** Each colour must be given to at least
   ``min_usage / C`` of the batch's sources. Colours below that quota take
   isolated sources (no neighbour) from colours above it, choosing the
   sources that lose least preference (smallest ``s_k(c_k) - s_k(c)``).
   This keeps a learnable target (a source keeps its colour from step to
   step unless its colour is over-used), unlike a random colour per step,
   which leaves the network nothing to predict for isolated sources.

The loss is then a per-source footprint term plus a background term:

    fg = sum_k w_k * [ sum_{p in F_k} v_p (-log y_{c_k}(p)) / sum_{p in F_k} v_p ] / sum_k w_k
    bg = weighted mean over background pixels of -log y_0
    loss = fg_weight * fg + (1 - fg_weight) * bg

(with a share ``pixel_share`` of the plain weighted per-pixel mean mixed
in). The footprint term is averaged per *source*, not per pixel, so a faint
5-pixel source weighs as much as a 2000-pixel galaxy and the members of a
pair are not drowned by the big objects of the crop. ``w_k`` is a
per-source weight (``source_weights``: the trainer weighs blended sources
and sources on contaminants up) and ``v_p`` a per-pixel weight
(``pixel_weights``: the trainer weighs up the pixels where two sources
meet, which is where the colours must differ). The background term may
be weighted (``bg_weights``: contaminated pixels weigh more). With
``fg_weight = 0.5`` (default) the two terms are averaged; if a batch has
no source pixel (or no background pixel) the other term alone is used.
Only the chosen colour's footprint term and the background term carry
gradient.

Label conventions: ``labels`` (B, H, W) integers, 0 = background,
> 0 = source id (ids must be unique across the batch, see
`astro_deepcolor.training.data.collate`), < 0 = ignored (no loss at all:
e.g. sources below the training S/N limit). Footprints with fewer than
``min_area`` pixels are ignored too (Kulikov et al. ignore objects of
<= 10 px; our sources are small, so the default is 5 px). Halo pairs are
``(flat index into B*H*W, source id)``; a source with no halo pixel gets
a zero halo term.

Everything runs as tensor operations (``unique``, ``index_add_``,
``scatter``); the only loops are over colouring rounds (at most the size
of the largest group) and over the C colours in the quota step.
"""

import torch
from torch import nn

__all__ = ['DeepColoringLoss', 'assign_colors', 'colour_preferences', 'deep_coloring_loss',
           'neighbour_pairs']

_LOG_EPS = 1e-7


def _log_probs(output, from_logits):
    if output.ndim != 4:
        msg = f'output must be (B, C + 1, H, W), got shape {tuple(output.shape)}'
        raise ValueError(msg)
    if output.shape[1] < 2:
        msg = f'output needs >= 2 channels, got {output.shape[1]}'
        raise ValueError(msg)
    if from_logits:
        return torch.log_softmax(output.float(), dim=1)
    return torch.log(output.float().clamp_min(_LOG_EPS))


def _log1m_exp(logp):
    """log(1 - exp(logp)), stable for logp close to 0."""
    return torch.log(-torch.expm1(logp.clamp(max=-_LOG_EPS)))


def colour_preferences(logp_fg, src, logp_halo, halo_src, n_sources, mu):
    """
    The colour preference ``s_k(c)`` of every source (no gradient).

    Parameters
    ----------
    logp_fg : `torch.Tensor`
        (n_fg, C) log-probabilities of the colour channels at footprint
        pixels.
    src : `torch.Tensor`
        (n_fg,) compact source index (0 .. n_sources - 1) of each
        footprint pixel.
    logp_halo : `torch.Tensor`
        (n_halo, C) colour log-probabilities at halo pixels.
    halo_src : `torch.Tensor`
        (n_halo,) compact source index of each halo pixel.
    n_sources : int
        Number of sources.
    mu : float
        Weight of the halo term.

    Returns
    -------
    pref : `torch.Tensor`
        (n_sources, C) float32 preferences (higher is preferred).
    """
    with torch.no_grad():
        n_col = logp_fg.shape[1]
        dev = logp_fg.device
        fp_sum = torch.zeros(n_sources, n_col, device=dev)
        fp_sum.index_add_(0, src, logp_fg.float())
        fp_n = torch.bincount(src, minlength=n_sources).clamp_min(1)
        crit = fp_sum / fp_n[:, None]
        if mu > 0 and halo_src.numel():
            h_sum = torch.zeros(n_sources, n_col, device=dev)
            h_sum.index_add_(0, halo_src, _log1m_exp(logp_halo.float()))
            h_n = torch.bincount(halo_src, minlength=n_sources).clamp_min(1)
            crit = crit + mu * h_sum / h_n[:, None]
        return crit


def neighbour_pairs(halo_src, halo_owner):
    """
    Unique neighbour pairs from halo pixels.

    Parameters
    ----------
    halo_src : `torch.Tensor`
        (n_halo,) compact index of the source each halo pixel belongs to.
    halo_owner : `torch.Tensor`
        (n_halo,) compact index of the source whose footprint holds that
        pixel, or -1 (background, ignored or unknown source).

    Returns
    -------
    pairs : `torch.Tensor`
        (n_pairs, 2) int64, each unordered pair once with ``i < j``.
    """
    ok = (halo_owner >= 0) & (halo_owner != halo_src)
    a, b = halo_src[ok], halo_owner[ok]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    if not lo.numel():
        return torch.zeros((0, 2), dtype=torch.int64, device=halo_src.device)
    n = int(hi.max()) + 1
    key = torch.unique(lo * n + hi)
    return torch.stack([key // n, key % n], dim=1)


def assign_colors(pref, pairs, priority=None, *, min_usage=0.5):
    """
    Colour every source: neighbours differ and every colour stays alive.

    See the module docstring for the rule.

    Parameters
    ----------
    pref : `torch.Tensor`
        (n_sources, C) colour preferences (`colour_preferences`).
    pairs : `torch.Tensor`
        (n_pairs, 2) neighbour pairs (`neighbour_pairs`).
    priority : `torch.Tensor`, optional
        (n_sources,) order of choice within a group (higher first), e.g.
        the footprint area; ties are broken by index. None: by index.
    min_usage : float, optional
        Each colour is given to at least ``floor(min_usage * n / C)``
        sources, taken from the isolated sources of over-used colours; 0
        disables the quota.

    Returns
    -------
    colors : `torch.Tensor`
        (n_sources,) int64 colour index in 0 .. C - 1 (add 1 for the
        output channel).
    """
    with torch.no_grad():
        pref = pref.float()
        n, n_col = pref.shape
        dev = pref.device
        colors = pref.argmax(dim=1)
        if n == 0:
            return colors
        # Unique priorities: the value, then the index, as one float64 key.
        idx = torch.arange(n, device=dev, dtype=torch.float64)
        if priority is None:
            key = -idx
        else:
            prio = priority.to(dev, torch.float64)
            rank = torch.empty(n, dtype=torch.float64, device=dev)
            order = torch.argsort(prio * (n + 1) - idx, stable=True)
            rank[order] = torch.arange(n, device=dev, dtype=torch.float64)
            key = rank
        deg = torch.zeros(n, dtype=torch.int64, device=dev)
        if pairs.numel():
            a = torch.cat([pairs[:, 0], pairs[:, 1]])
            b = torch.cat([pairs[:, 1], pairs[:, 0]])
            deg.index_add_(0, a, torch.ones_like(a))
            col = torch.full((n,), -1, dtype=torch.int64, device=dev)
            col[deg == 0] = colors[deg == 0]
            while True:
                unc = col < 0
                if not bool(unc.any()):
                    break
                # Wait for every uncoloured neighbour of higher priority.
                wait = unc[a] & unc[b] & (key[b] > key[a])
                blocked = torch.zeros(n, dtype=torch.bool, device=dev)
                blocked[a[wait]] = True
                ready = unc & ~blocked
                # Colours used by coloured neighbours (counted).
                done = ready[a] & (col[b] >= 0)
                used = torch.zeros(n, n_col, device=dev)
                used.index_put_((a[done], col[b[done]]),
                                torch.ones(int(done.sum()), device=dev),
                                accumulate=True)
                score = torch.where(used > 0, -torch.inf, pref)
                # No free colour: the one least used around, then preferred.
                full = torch.isinf(score).all(dim=1)
                score = torch.where(full[:, None],
                                    -used * 1e6 + pref.clamp(-1e5, 1e5), score)
                pick = score.argmax(dim=1)
                col[ready] = pick[ready]
            colors = col
        if min_usage > 0 and n_col > 1:
            quota = int(min_usage * n / n_col)
            counts = torch.bincount(colors, minlength=n_col)
            iso = deg == 0
            for c in torch.argsort(counts).tolist():
                deficit = quota - int(counts[c])
                if deficit <= 0:
                    continue
                surplus = (counts - quota).clamp_min(0)
                cand = torch.nonzero(iso & (surplus[colors] > 0)
                                     & (colors != c)).squeeze(1)
                if not cand.numel():
                    continue
                regret = pref[cand, colors[cand]] - pref[cand, c]
                cand = cand[torch.argsort(regret, stable=True)]
                # Take at most `surplus` sources from each donor colour.
                donor = colors[cand]
                onehot = torch.nn.functional.one_hot(donor, n_col)
                rank = (onehot.cumsum(0) * onehot).sum(1)
                cand = cand[rank <= surplus[donor]][:deficit]
                counts.index_add_(0, colors[cand], -torch.ones_like(cand))
                counts[c] += cand.numel()
                colors[cand] = c
        return colors


def deep_coloring_loss(output, labels, halo_pix, halo_src, *, mu=5.0,
                       fg_weight=0.5, min_area=1, from_logits=True,
                       bg_weights=None, source_weights=None, pixel_weights=None,
                       min_usage=0.5, pixel_share=0.0, neighbour_weight=0.0,
                       return_details=False):
    """
    Deep-coloring loss of a batch.

    Parameters
    ----------
    output : `torch.Tensor`
        (B, C + 1, H, W) logits (``from_logits=True``) or probabilities.
    labels : `torch.Tensor`
        (B, H, W) integer label map: 0 background, > 0 source id (unique
        across the batch), < 0 ignored.
    halo_pix, halo_src : `torch.Tensor`
        Halo pairs: flat pixel index into ``B * H * W`` and source id.
    mu : float, optional
        Weight of the halo term in the colour preference.
    fg_weight : float, optional
        Weight of the footprint term (the background term has
        ``1 - fg_weight``).
    min_area : int, optional
        Footprints with fewer pixels in the batch are ignored.
    from_logits : bool, optional
        Whether ``output`` holds logits (else probabilities).
    bg_weights : `torch.Tensor`, optional
        (B, H, W) non-negative weights of the pixels in the background
        term (a weighted mean); None means uniform.
    source_weights : `torch.Tensor`, optional
        (B, H, W) map whose value on a source's pixels is that source's
        weight ``w_k`` (its mean over the footprint is used); None: 1.
    pixel_weights : `torch.Tensor`, optional
        (B, H, W) positive weight ``v_p`` of each footprint pixel within
        its source's mean; None: 1.
    min_usage : float, optional
        Colour quota of `assign_colors`.
    pixel_share : float, optional
        Share of a per-pixel mean in the footprint term:
        ``fg = (1 - pixel_share) * per-source mean + pixel_share *
        per-pixel mean`` (both with the same weights). A pure per-source
        mean weighs the core of a 2000-pixel star 400 times less than a
        5-pixel source, and a network trained with it paints bright stars
        in concentric rings of colours (each ring a false detection); a
        share of per-pixel mean keeps big sources whole.
    neighbour_weight : float, optional
        Weight of a *neighbour-exclusion* term (0: none): for every source
        k, the mean over the pixels of *other* sources' footprints inside
        k's halo of ``-log(1 - y_{c_k}(p))``, averaged over the sources
        that have such pixels and added to the loss. It is the halo term of
        Kulikov et al.'s loss restricted to where it matters here: it
        pushes a source's colour off its touching neighbours, whose pixels
        the footprint term alone lets the network paint in one colour
        (background halo pixels are already the background term's).
    return_details : bool, optional
        Also return a dict with the chosen colours and term values.

    Returns
    -------
    loss : `torch.Tensor`
        Scalar loss.
    details : dict
        Only with ``return_details``: ``colors`` (n_sources,),
        ``source_ids`` (n_sources,), ``pairs`` (neighbour pairs, compact
        indices), ``fg`` and ``bg`` terms, ``n_fg`` and ``n_bg`` pixel
        counts.
    """
    logp = _log_probs(output, from_logits)
    b, k1, h, w = logp.shape
    shape = (b, h, w)
    if tuple(labels.shape) != shape:
        msg = (f'labels must have shape {shape}, got '
               f'{tuple(labels.shape)}')
        raise ValueError(msg)
    for name, arr in (('bg_weights', bg_weights),
                      ('source_weights', source_weights),
                      ('pixel_weights', pixel_weights)):
        if arr is not None and tuple(arr.shape) != shape:
            msg = f'{name} must have shape {shape}, got {tuple(arr.shape)}'
            raise ValueError(msg)
    flat = logp.permute(0, 2, 3, 1).reshape(-1, k1)
    dev = flat.device
    lab = labels.reshape(-1).to(device=dev, dtype=torch.int64)
    halo_pix = halo_pix.to(device=dev, dtype=torch.int64)
    halo_src = halo_src.to(device=dev, dtype=torch.int64)

    fg_idx = torch.nonzero(lab > 0).squeeze(1)
    ids, src = torch.unique(lab[fg_idx], return_inverse=True)
    if min_area > 1 and ids.numel():
        area = torch.bincount(src, minlength=ids.numel())
        big = area >= min_area
        if not bool(big.all()):
            keep_px = big[src]
            fg_idx = fg_idx[keep_px]
            ids, src = torch.unique(lab[fg_idx], return_inverse=True)
    n_src = ids.numel()
    bg_idx = torch.nonzero(lab == 0).squeeze(1)

    zero = flat.sum() * 0.0  # keeps the graph (and device, dtype)
    details = {'source_ids': ids, 'n_fg': int(fg_idx.numel()),
               'n_bg': int(bg_idx.numel())}
    pairs = torch.zeros((0, 2), dtype=torch.int64, device=dev)
    if n_src:
        # Map halo ids to compact indices; drop pairs of unknown sources.
        pos = torch.searchsorted(ids, halo_src).clamp(max=n_src - 1)
        ok = ids[pos] == halo_src
        hpix, hsrc = halo_pix[ok], pos[ok]
        # The source (compact index) whose footprint holds each halo pixel.
        owner_lab = lab[hpix]
        opos = torch.searchsorted(ids, owner_lab).clamp(max=n_src - 1)
        owner = torch.where((owner_lab > 0) & (ids[opos] == owner_lab), opos, -1)
        pairs = neighbour_pairs(hsrc, owner)
        pref = colour_preferences(flat[fg_idx, 1:], src, flat[hpix, 1:],
                                  hsrc, n_src, mu)
        area = torch.bincount(src, minlength=n_src)
        colors = assign_colors(pref, pairs, area, min_usage=min_usage)
        nll = -flat[fg_idx, 1 + colors[src]]
        if pixel_weights is None:
            v = torch.ones_like(nll)
        else:
            v = pixel_weights.reshape(-1).to(device=dev, dtype=nll.dtype)[fg_idx]
            if v.numel() and not float(v.min()) > 0:
                msg = 'pixel_weights must be > 0 on source pixels'
                raise ValueError(msg)
        num = torch.zeros(n_src, device=dev, dtype=nll.dtype).index_add_(0, src, v * nll)
        den = torch.zeros(n_src, device=dev, dtype=nll.dtype).index_add_(0, src, v)
        per_source = num / den.clamp_min(1e-12)
        if source_weights is None:
            wk = torch.ones(n_src, device=dev, dtype=nll.dtype)
        else:
            sw = source_weights.reshape(-1).to(device=dev, dtype=nll.dtype)[fg_idx]
            if sw.numel() and float(sw.min()) < 0:
                msg = 'source_weights must be non-negative'
                raise ValueError(msg)
            wk = torch.zeros(n_src, device=dev, dtype=nll.dtype).index_add_(0, src, sw)
            wk = wk / torch.bincount(src, minlength=n_src).clamp_min(1)
        fg_term = (wk * per_source).sum() / wk.sum().clamp_min(1e-12)
        if pixel_share > 0:
            wp = wk[src] * v
            pixel_term = (wp * nll).sum() / wp.sum().clamp_min(1e-12)
            fg_term = (1.0 - pixel_share) * fg_term + pixel_share * pixel_term
        nb_term = zero
        other = (owner >= 0) & (owner != hsrc)
        if neighbour_weight > 0 and bool(other.any()):
            ks, px = hsrc[other], hpix[other]
            lp = flat[px, 1 + colors[ks]].clamp(max=-1e-6)
            excl = -torch.log1p(-torch.exp(lp))          # -log(1 - y_ck(p))
            num = torch.zeros(n_src, device=dev, dtype=excl.dtype).index_add_(0, ks, excl)
            cnt = torch.bincount(ks, minlength=n_src)
            has = cnt > 0
            nb_term = (num[has] / cnt[has]).mean()
    else:
        colors = torch.zeros(0, dtype=torch.int64, device=dev)
        fg_term = zero
        nb_term = zero
    if bg_weights is not None:
        wts = bg_weights.reshape(-1).to(device=dev, dtype=flat.dtype)[bg_idx]
        if wts.numel() and float(wts.min()) < 0:
            msg = 'bg_weights must be non-negative'
            raise ValueError(msg)
        wsum = wts.sum()
    if not bg_idx.numel():
        bg_term = zero
    elif bg_weights is None or not float(wsum) > 0:
        bg_term = -flat[bg_idx, 0].mean()
    else:
        bg_term = -(flat[bg_idx, 0] * wts).sum() / wsum

    if n_src and bg_idx.numel():
        loss = fg_weight * fg_term + (1.0 - fg_weight) * bg_term
    elif n_src:
        loss = fg_term
    else:
        loss = bg_term
    if neighbour_weight > 0:
        loss = loss + neighbour_weight * nb_term
    if return_details:
        details.update(colors=colors, pairs=pairs, fg=fg_term.detach(),
                       bg=bg_term.detach(), neighbour=nb_term.detach())
        return loss, details
    return loss


class DeepColoringLoss(nn.Module):
    """
    The deep-coloring loss as a module (see `deep_coloring_loss`).

    Parameters
    ----------
    mu : float, optional
        Weight of the halo term in the colour assignment.
    fg_weight : float, optional
        Weight of the footprint term; the background term has
        ``1 - fg_weight``.
    min_area : int, optional
        Footprints with fewer pixels are ignored.
    contaminant_weight : float, optional
        Weight, relative to clean sky, of the background pixels flagged
        as contaminated in the background term (>= 1; 1 = unweighted).
    min_usage : float, optional
        Colour quota of `assign_colors` (0 disables it).
    pixel_share : float, optional
        Share of the per-pixel mean in the footprint term (see
        `deep_coloring_loss`).
    neighbour_weight : float, optional
        Weight of the neighbour-exclusion term (see `deep_coloring_loss`).
    """

    def __init__(self, mu=5.0, fg_weight=0.5, min_area=1,
                 contaminant_weight=1.0, min_usage=0.5, pixel_share=0.0,
                 neighbour_weight=0.0):
        super().__init__()
        if not mu >= 0:
            msg = f'mu must be >= 0, got {mu!r}'
            raise ValueError(msg)
        if not 0 < fg_weight < 1:
            msg = f'fg_weight must be in (0, 1), got {fg_weight!r}'
            raise ValueError(msg)
        if int(min_area) != min_area or min_area < 1:
            msg = f'min_area must be a positive integer, got {min_area!r}'
            raise ValueError(msg)
        if not contaminant_weight >= 1:
            msg = f'contaminant_weight must be >= 1, got {contaminant_weight!r}'
            raise ValueError(msg)
        self.mu = float(mu)
        self.fg_weight = float(fg_weight)
        self.min_area = int(min_area)
        self.contaminant_weight = float(contaminant_weight)
        if not 0 <= min_usage <= 1:
            msg = f'min_usage must be in [0, 1], got {min_usage!r}'
            raise ValueError(msg)
        self.min_usage = float(min_usage)
        if not 0 <= pixel_share <= 1:
            msg = f'pixel_share must be in [0, 1], got {pixel_share!r}'
            raise ValueError(msg)
        self.pixel_share = float(pixel_share)
        if not neighbour_weight >= 0:
            msg = f'neighbour_weight must be >= 0, got {neighbour_weight!r}'
            raise ValueError(msg)
        self.neighbour_weight = float(neighbour_weight)

    def forward(self, logits, labels, halo_pix, halo_src, contaminated=None,
                return_details=False, source_weights=None, pixel_weights=None):
        """
        Compute the loss from logits.

        Parameters
        ----------
        logits : `torch.Tensor`
            (B, C + 1, H, W) network output.
        labels : `torch.Tensor`
            (B, H, W) label map.
        halo_pix, halo_src : `torch.Tensor`
            Halo pairs.
        contaminated : `torch.Tensor`, optional
            (B, H, W) bool mask of contaminated background pixels,
            weighted ``contaminant_weight`` in the background term.
        return_details : bool, optional
            Also return the details dict.
        source_weights, pixel_weights : `torch.Tensor`, optional
            See `deep_coloring_loss`.

        Returns
        -------
        loss : `torch.Tensor`
            Scalar loss (and details, see `deep_coloring_loss`).
        """
        bg_weights = None
        if contaminated is not None and self.contaminant_weight != 1.0:
            bg_weights = 1.0 + (self.contaminant_weight - 1.0) * contaminated.float()
        return deep_coloring_loss(logits, labels, halo_pix, halo_src,
                                  mu=self.mu, fg_weight=self.fg_weight,
                                  min_area=self.min_area, from_logits=True,
                                  bg_weights=bg_weights,
                                  source_weights=source_weights,
                                  pixel_weights=pixel_weights,
                                  min_usage=self.min_usage,
                                  pixel_share=self.pixel_share,
                                  neighbour_weight=self.neighbour_weight,
                                  return_details=return_details)
