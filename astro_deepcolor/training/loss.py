# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The deep-coloring loss (Kulikov et al. 2018), vectorised over sources.

For every source k with footprint F_k and halo H_k (the footprint dilated
by ``halo_radius`` pixels, minus the footprint), the colour is chosen
without gradient as

    c_k = argmax_c  mean_{p in F_k} log y_c(p)  +  mu * mean_{p in H_k} log(1 - y_c(p))

so that each source takes a colour that is already strong on its own
footprint and weak around it (where its neighbours are). The loss is then
the cross-entropy of every footprint pixel with its source's colour plus
the cross-entropy of every background pixel with class 0:

    loss = fg_weight * mean_fp [-log y_{c_k}]  +  (1 - fg_weight) * mean_bg [-log y_0]

where ``mean_bg`` may be weighted (``bg_weights``): the trainer gives the
background pixels a contaminant changed ``contaminant_weight`` times the
weight of clean sky, so the rare artefact pixels (a trail, a fringe crest)
are not drowned by the ~10^4 sky pixels of a crop.

With ``fg_weight = 0.5`` (default) the two terms are averaged, which keeps
faint, small sources from being drowned by the ~90 % of background pixels
of a typical crop; if a batch has no source pixel (or no background
pixel) the other term alone is used. Only the chosen colour's footprint
term and the background term carry gradient.

Label conventions: ``labels`` (B, H, W) integers, 0 = background,
> 0 = source id (ids must be unique across the batch, see
`astro_deepcolor.training.data.collate`), < 0 = ignored (no loss at all:
e.g. sources below the training S/N limit). Footprints with fewer than
``min_area`` pixels are ignored too (Kulikov et al. ignore objects of
<= 10 px; our sources are small, so the default is 5 px). Halo pairs are
``(flat index into B*H*W, source id)``; a source with no halo pixel gets
a zero halo term.

Everything runs as a handful of tensor operations (``unique``,
``index_add_``, ``gather``); there is no Python loop over sources, so
thousands of sources per batch cost little.
"""

import torch
from torch import nn

__all__ = ['DeepColoringLoss', 'assign_colors', 'deep_coloring_loss']

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


def assign_colors(logp_fg, src, logp_halo, halo_src, n_sources, mu):
    """
    Choose the colour of every source (no gradient).

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
    colors : `torch.Tensor`
        (n_sources,) int64 colour index in 0 .. C - 1 (add 1 for the
        output channel).
    criterion : `torch.Tensor`
        (n_sources, C) the maximised criterion.
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
        return crit.argmax(dim=1), crit


def deep_coloring_loss(output, labels, halo_pix, halo_src, *, mu=5.0,
                       fg_weight=0.5, min_area=1, from_logits=True,
                       bg_weights=None, return_details=False):
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
        Weight of the halo term in the colour assignment.
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
    return_details : bool, optional
        Also return a dict with the chosen colours and term values.

    Returns
    -------
    loss : `torch.Tensor`
        Scalar loss.
    details : dict
        Only with ``return_details``: ``colors`` (n_sources,),
        ``source_ids`` (n_sources,), ``fg`` and ``bg`` terms,
        ``n_fg`` and ``n_bg`` pixel counts.
    """
    logp = _log_probs(output, from_logits)
    b, k1, h, w = logp.shape
    if tuple(labels.shape) != (b, h, w):
        msg = (f'labels must have shape {(b, h, w)}, got '
               f'{tuple(labels.shape)}')
        raise ValueError(msg)
    flat = logp.permute(0, 2, 3, 1).reshape(-1, k1)
    lab = labels.reshape(-1).to(device=flat.device, dtype=torch.int64)
    halo_pix = halo_pix.to(device=flat.device, dtype=torch.int64)
    halo_src = halo_src.to(device=flat.device, dtype=torch.int64)

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
    if n_src:
        # Map halo ids to compact indices; drop pairs of unknown sources.
        pos = torch.searchsorted(ids, halo_src).clamp(max=n_src - 1)
        ok = ids[pos] == halo_src
        hpix, hsrc = halo_pix[ok], pos[ok]
        colors, _ = assign_colors(flat[fg_idx, 1:], src, flat[hpix, 1:],
                                  hsrc, n_src, mu)
        chosen = flat[fg_idx, 1 + colors[src]]
        fg_term = -chosen.mean()
    else:
        colors = torch.zeros(0, dtype=torch.int64, device=flat.device)
        fg_term = zero
    if bg_weights is not None:
        if tuple(bg_weights.shape) != (b, h, w):
            msg = (f'bg_weights must have shape {(b, h, w)}, got '
                   f'{tuple(bg_weights.shape)}')
            raise ValueError(msg)
        wts = bg_weights.reshape(-1).to(device=flat.device,
                                        dtype=flat.dtype)[bg_idx]
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
    if return_details:
        details.update(colors=colors, fg=fg_term.detach(),
                       bg=bg_term.detach())
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
    """

    def __init__(self, mu=5.0, fg_weight=0.5, min_area=1,
                 contaminant_weight=1.0):
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

    def forward(self, logits, labels, halo_pix, halo_src, contaminated=None,
                return_details=False):
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
                                  return_details=return_details)
