# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training loop of the deep-coloring U-Net.

``train(model_config, train_config)`` streams simulated crops
(`astro_deepcolor.training.data.CropStream`, DataLoader worker processes),
optimises `~astro_deepcolor.training.loss.DeepColoringLoss` with AdamW
(linear warm-up, cosine decay), runs in mixed precision on CUDA (bf16
where supported, else fp16 with gradient scaling), logs the loss and the
validation completeness/contamination, and writes checkpoints
(``last.pt`` every ``checkpoint_every`` steps and at each validation,
``best.pt`` when the validation score improves). A checkpoint holds the
model weights, optimizer and scheduler states, step, RNG states, the model
configuration and the training configuration, so ``resume=True`` continues
exactly where it stopped (the data stream is indexed by step).

Configuration files are YAML with a ``model`` section
(`~astro_deepcolor.model.ModelConfig` fields) and a ``train`` section
(`TrainConfig` fields); see ``configs/default.yaml``.
"""

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from astro_deepcolor.model.config import ModelConfig
from astro_deepcolor.model.export import export_onnx
from astro_deepcolor.model.unet import UNet, grow_state_dict
from astro_deepcolor.training.data import CropStream, batches
from astro_deepcolor.training.loss import DeepColoringLoss
from astro_deepcolor.training.validation import ValidationSet

__all__ = ['TrainConfig', 'load_config', 'train']


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """
    Settings of a training run.

    Parameters
    ----------
    out_dir : str
        Directory of checkpoints (``last.pt``, ``best.pt``) and of
        ``history.json``.
    log_file : str or None
        Text log (default ``out_dir/train.log``).
    steps : int
        Total optimisation steps (the learning-rate schedule length).
    batch_size : int
        Crops per step.
    crop : int
        Crop side in pixels (multiple of ``2**depth``).
    crops_per_image : int
        Crops cut from each simulated image.
    recipes : dict
        Recipe name to sampling weight (train split).
    lr : float
        Peak AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear warm-up length.
    min_lr_fraction : float
        Final learning rate as a fraction of ``lr`` (cosine decay).
    fg_weight : float
        Footprint-term weight of the loss.
    min_snr : float
        Sources below this true S/N are ignored by the loss.
    hard_fraction : float
        Fraction of crops centred on a contaminated background pixel
        (hard-negative sampling, see `astro_deepcolor.training.data`).
    contaminant_weight : float
        Weight of contaminated background pixels in the background term
        of the loss, relative to clean sky (>= 1).
    blend_groups : float
        Close pairs and small groups injected per megapixel into each
        training image (`~astro_deepcolor.simulation.simulate_image`).
    blend_fraction : float
        Fraction of crops centred on a blended source or a source on a
        contaminant (see `astro_deepcolor.training.data`).
    hard_source_weight : float
        Weight of those sources in the footprint term (>= 1).
    border_weight : float
        Weight of the source pixels that border another source, within
        their source's footprint mean (>= 1).
    pixel_share : float
        Share of the per-pixel mean in the footprint term of the loss
        (`~astro_deepcolor.training.loss.deep_coloring_loss`).
    neighbour_weight : float
        Weight of the loss's neighbour-exclusion term (0: none; see
        `~astro_deepcolor.training.loss.deep_coloring_loss`).
    min_usage : float
        Colour quota of the colour assignment
        (`~astro_deepcolor.training.loss.assign_colors`; 0 disables it).
    init_weights : str or None
        Checkpoint (``.pt``) whose network weights start a new run (a
        fine-tuning stage: fresh optimiser, schedule and data stream);
        its model configuration must match, or be the same network one
        level shallower, which is grown into this one
        (`~astro_deepcolor.model.unet.grow_state_dict`). Ignored when
        resuming.
    seed : int
        Seed of the weights and of the data stream.
    num_workers : int
        DataLoader worker processes.
    threads : int
        torch intra-op threads (CPU).
    log_every, checkpoint_every, val_every : int
        Intervals in steps.
    val_images : int
        Validation images per recipe (validation split, fixed seeds).
    export_onnx : str or None
        If set, the best model is exported to this ONNX path at each
        improvement.
    device : str
        'auto' (CUDA when available), 'cpu' or 'cuda'.
    amp : bool
        Mixed precision: bf16 autocast on CPU and on CUDA where supported
        (else fp16 with gradient scaling), with channels-last memory
        layout (2.5x faster per step on CPU).
    """

    out_dir: str = 'cache/train'
    log_file: str | None = None
    steps: int = 20000
    batch_size: int = 8
    crop: int = 128
    crops_per_image: int = 4
    recipes: dict = dataclasses.field(
        default_factory=lambda: {'clean': 0.5, 'contaminated': 0.5})
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 200
    min_lr_fraction: float = 0.05
    fg_weight: float = 0.5
    min_snr: float = 2.0
    hard_fraction: float = 0.0
    contaminant_weight: float = 1.0
    blend_groups: float = 0.0
    blend_fraction: float = 0.0
    hard_source_weight: float = 1.0
    border_weight: float = 1.0
    min_usage: float = 0.0
    pixel_share: float = 0.0
    neighbour_weight: float = 0.0
    init_weights: str | None = None
    seed: int = 0
    num_workers: int = 1
    threads: int = 1
    log_every: int = 20
    checkpoint_every: int = 100
    val_every: int = 500
    val_images: int = 4
    export_onnx: str | None = None
    device: str = 'auto'
    amp: bool = True

    def __post_init__(self):
        for name in ('steps', 'batch_size', 'crop', 'crops_per_image',
                     'threads', 'log_every', 'checkpoint_every', 'val_every'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                msg = f'{name} must be a positive integer, got {v!r}'
                raise ValueError(msg)
        for name in ('num_workers', 'warmup_steps', 'val_images', 'seed'):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                msg = f'{name} must be a non-negative integer, got {v!r}'
                raise ValueError(msg)
        if self.batch_size % self.crops_per_image:
            msg = (f'batch_size ({self.batch_size}) must be a multiple of '
                   f'crops_per_image ({self.crops_per_image})')
            raise ValueError(msg)
        if not self.lr > 0:
            msg = f'lr must be > 0, got {self.lr!r}'
            raise ValueError(msg)
        if not 0 < self.fg_weight < 1:
            msg = f'fg_weight must be in (0, 1), got {self.fg_weight!r}'
            raise ValueError(msg)
        if not 0 <= self.hard_fraction <= 1:
            msg = f'hard_fraction must be in [0, 1], got {self.hard_fraction!r}'
            raise ValueError(msg)
        if not self.contaminant_weight >= 1:
            msg = (f'contaminant_weight must be >= 1, got '
                   f'{self.contaminant_weight!r}')
            raise ValueError(msg)
        if not 0 <= self.blend_fraction <= 1 - self.hard_fraction:
            msg = (f'blend_fraction must be in [0, 1 - hard_fraction], got '
                   f'{self.blend_fraction!r}')
            raise ValueError(msg)
        if not 0 <= self.blend_groups <= 1e4:
            msg = f'blend_groups must be in [0, 1e4], got {self.blend_groups!r}'
            raise ValueError(msg)
        for name in ('hard_source_weight', 'border_weight'):
            if not getattr(self, name) >= 1:
                msg = f'{name} must be >= 1, got {getattr(self, name)!r}'
                raise ValueError(msg)
        if not self.neighbour_weight >= 0:
            msg = f'neighbour_weight must be >= 0, got {self.neighbour_weight!r}'
            raise ValueError(msg)
        if not 0 <= self.pixel_share <= 1:
            msg = f'pixel_share must be in [0, 1], got {self.pixel_share!r}'
            raise ValueError(msg)
        if not 0 <= self.min_usage <= 1:
            msg = f'min_usage must be in [0, 1], got {self.min_usage!r}'
            raise ValueError(msg)
        if self.device not in ('auto', 'cpu', 'cuda'):
            msg = f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}"
            raise ValueError(msg)


def load_config(path, **overrides):
    """
    Read a training YAML file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        YAML with ``model`` and ``train`` sections.
    **overrides
        `TrainConfig` fields to override (None values are ignored).

    Returns
    -------
    model_config : `~astro_deepcolor.model.ModelConfig`
        The architecture and method settings.
    train_config : `TrainConfig`
        The run settings.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        msg = f'training configuration {str(path)!r} does not exist'
        raise FileNotFoundError(msg)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        msg = f'training configuration {str(path)!r} is not valid YAML: {exc}'
        raise ValueError(msg) from None
    unknown = sorted(set(doc) - {'model', 'train'})
    if unknown:
        msg = f'unknown sections in {str(path)!r}: {unknown}'
        raise ValueError(msg)
    model = ModelConfig.from_dict(dict(doc.get('model') or {}))
    tdict = dict(doc.get('train') or {})
    tdict.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(tdict) - names)
    if unknown:
        msg = f'unknown train keys in {str(path)!r}: {unknown}'
        raise ValueError(msg)
    return model, TrainConfig(**tdict)


class _Logger:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message):
        line = f'{time.strftime("%Y-%m-%d %H:%M:%S")} {message}'
        with self.path.open('a') as fh:
            fh.write(line + '\n')


def _lr_lambda(tc):
    def f(step):
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        frac = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
        return tc.min_lr_fraction + (1 - tc.min_lr_fraction) * 0.5 * (
            1 + math.cos(math.pi * frac))
    return f


def _save(path, state):
    tmp = path.with_name(f'.{path.name}.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path, model_config, device, *, missing, mismatch):
    """Load a checkpoint whose model configuration must be ``model_config``."""
    if not Path(path).is_file():
        raise FileNotFoundError(missing)
    state = torch.load(path, map_location=device, weights_only=True)
    if ModelConfig.from_dict(state['config']) != model_config:
        raise ValueError(mismatch)
    return state


def _device(tc):
    if tc.device == 'cuda' or (tc.device == 'auto' and torch.cuda.is_available()):
        return torch.device('cuda')
    return torch.device('cpu')


def _predictor(net, device, tile_multiple, amp_dtype=None):
    def predict(image):
        ny, nx = image.shape
        py, px = (-ny) % tile_multiple, (-nx) % tile_multiple
        x = np.pad(image, ((0, py), (0, px)))
        net.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                             enabled=amp_dtype is not None):
            t = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)
            p = torch.softmax(net(t).float(), dim=1)[0, :, :ny, :nx]
        net.train()
        return p.cpu().numpy()
    return predict


def _cached(predict):
    """Memoise ``predict`` by image identity (the validation images persist)."""
    cache = {}

    def wrapped(image):
        if id(image) not in cache:
            cache[id(image)] = predict(image)
        return cache[id(image)]

    return wrapped


def _colour_summary(val_set, predict, radius):
    """Colour usage and neighbour separation over the validation images."""
    from astro_deepcolor.evaluation.colours import (
        colour_statistics,
        pool_colour_statistics,
    )

    return pool_colour_statistics(
        colour_statistics(predict(image), tseg, radius=radius)
        for _, image, _, tseg, _ in val_set.items)


def train(model_config, train_config, *, resume=False, progress=True,
          max_steps=None):
    """
    Train (or resume training) a deep-coloring network.

    Parameters
    ----------
    model_config : `~astro_deepcolor.model.ModelConfig`
        Architecture and method settings.
    train_config : `TrainConfig`
        Run settings.
    resume : bool, optional
        Continue from ``out_dir/last.pt`` (error if absent).
    progress : bool, optional
        Show a tqdm progress bar.
    max_steps : int, optional
        Stop after this many steps in this call (the schedule still uses
        ``train_config.steps``); for tests and time-boxed runs.

    Returns
    -------
    summary : dict
        ``step``, ``loss`` (mean of the last logging window),
        ``best_score`` and ``last_validation``.
    """
    from tqdm import tqdm

    tc = train_config
    if tc.crop % model_config.tile_multiple:
        msg = (f'crop ({tc.crop}) must be a multiple of tile_multiple '
               f'({model_config.tile_multiple})')
        raise ValueError(msg)
    out = Path(tc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Logger(tc.log_file or out / 'train.log')
    last_path, best_path = out / 'last.pt', out / 'best.pt'
    torch.set_num_threads(tc.threads)
    device = _device(tc)

    torch.manual_seed(tc.seed)
    memory_format = torch.channels_last if tc.amp else torch.contiguous_format
    net = UNet(model_config).to(device, memory_format=memory_format)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr,
                            weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tc))
    criterion = DeepColoringLoss(mu=model_config.mu, fg_weight=tc.fg_weight,
                                 min_area=model_config.min_area,
                                 contaminant_weight=tc.contaminant_weight,
                                 min_usage=tc.min_usage,
                                 pixel_share=tc.pixel_share,
                                 neighbour_weight=tc.neighbour_weight)
    step, best, history = 0, -1.0, []
    if resume:
        state = _load_checkpoint(
            last_path, model_config, device,
            missing=f'cannot resume: {str(last_path)!r} does not exist',
            mismatch=(f'cannot resume: the model configuration of '
                      f'{str(last_path)!r} differs from the requested one'))
        net.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        sched.load_state_dict(state['scheduler'])
        step, best = int(state['step']), float(state['best_score'])
        history = json.loads(state['history'])
        torch.set_rng_state(state['torch_rng'].cpu())
        log(f'resumed from {last_path} at step {step}')
    else:
        if tc.init_weights:
            init = Path(tc.init_weights)
            if not init.is_file():
                msg = f'init_weights {str(init)!r} does not exist'
                raise FileNotFoundError(msg)
            state = torch.load(init, map_location=device, weights_only=True)
            init_config = ModelConfig.from_dict(state['config'])
            if init_config == model_config:
                net.load_state_dict(state['model'])
                how = ''
            elif model_config.replace(depth=init_config.depth) == init_config \
                    and model_config.depth == init_config.depth + 1:
                net.load_state_dict(grow_state_dict(state['model'], init_config, net))
                how = (f', grown from depth {init_config.depth} to '
                       f'{model_config.depth}: the new innermost level starts fresh')
            else:
                msg = (f'init_weights {str(init)!r} has another model '
                       'configuration than the requested one (only a network '
                       'one level shallower, otherwise identical, can be grown)')
                raise ValueError(msg)
            log(f'weights initialised from {init} '
                f'(its step {int(state.get("step", -1))}){how}')
        log(f'new run: model {model_config.to_json()}')
        log(f'train {json.dumps(dataclasses.asdict(tc), sort_keys=True)}')

    use_amp = tc.amp
    if device.type == 'cuda':
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported()
                     else torch.float16)
    else:
        amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=(
        use_amp and device.type == 'cuda' and amp_dtype == torch.float16))

    images_per_batch = tc.batch_size // tc.crops_per_image
    stream = CropStream(tc.recipes, crop=tc.crop,
                        crops_per_image=tc.crops_per_image, seed=tc.seed,
                        start=step * images_per_batch, min_snr=tc.min_snr,
                        hard_fraction=tc.hard_fraction,
                        blend_fraction=tc.blend_fraction,
                        hard_source_weight=tc.hard_source_weight,
                        blend_groups=tc.blend_groups,
                        box_size=model_config.background_box,
                        filter_size=model_config.background_filter)
    val_set = None
    if tc.val_images:
        val_set = ValidationSet(list(tc.recipes), tc.val_images,
                                box_size=model_config.background_box,
                                filter_size=model_config.background_filter)

    def train_meta():
        return {'steps_done': step, 'seed': tc.seed,
                'recipes': dict(tc.recipes), 'crop': tc.crop,
                'batch_size': tc.batch_size, 'min_snr': tc.min_snr,
                'fg_weight': tc.fg_weight, 'lr': tc.lr,
                'hard_fraction': tc.hard_fraction,
                'contaminant_weight': tc.contaminant_weight,
                'blend_groups': tc.blend_groups,
                'blend_fraction': tc.blend_fraction,
                'hard_source_weight': tc.hard_source_weight,
                'border_weight': tc.border_weight,
                'min_usage': tc.min_usage,
                'pixel_share': tc.pixel_share,
                'neighbour_weight': tc.neighbour_weight,
                'init_weights': tc.init_weights,
                'best_score': best,
                'last_validation': history[-1] if history else None}

    def checkpoint(path):
        config = model_config.replace(training=train_meta())
        _save(path, {'model': net.state_dict(), 'optimizer': opt.state_dict(),
                     'scheduler': sched.state_dict(), 'step': step,
                     'best_score': best, 'history': json.dumps(history),
                     'config': config.to_dict(),
                     'train_config': json.dumps(dataclasses.asdict(tc)),
                     'torch_rng': torch.get_rng_state()})

    def validate():
        nonlocal best
        t0 = time.perf_counter()
        # Validation in float32, as the exported model runs; each image's
        # probabilities serve both the scores and the colour statistics.
        predict = _cached(_predictor(net, device, model_config.tile_multiple))
        res = val_set.evaluate(predict, n_pixels=model_config.min_area)
        score = float(np.mean([r['score'] for r in res.values()]))
        colours = _colour_summary(val_set, predict, model_config.halo_radius)
        entry = {'step': step, 'score': score, 'colours': colours,
                 **{k: {'completeness_at_5pc': r['best_completeness'],
                        'threshold': r['best_threshold'],
                        'contamination': r['best_contamination'],
                        'completeness_at': r['completeness_at']}
                    for k, r in res.items()}}
        history.append(entry)
        log(f'validation step {step}: score {score:.4f} ' + ' '.join(
            f"{k}: completeness(S/N>5)=" + '/'.join(
                f'{v:.3f}' for v in r['completeness_at'].values())
            + ' at contamination<=5/10/20%'
            for k, r in res.items())
            + f"; live colours {colours['live_colours']}/{model_config.n_colors}"
            f" (sources per colour {colours['colour_counts']}),"
            f" neighbour pairs coloured differently"
            f" {colours['distinct_fraction']:.3f} of {colours['n_neighbour_pairs']}"
            + f' [{time.perf_counter() - t0:.1f}s]')
        # Weights-only snapshot of every validated step, for a later
        # comparison on more images (benchmarks/compare_checkpoints.py).
        _save(out / f'step_{step:06d}.pt',
              {'model': net.state_dict(), 'step': step,
               'config': model_config.replace(training=train_meta()).to_dict()})
        (out / 'history.json').write_text(json.dumps(history, indent=1))
        if score > best:
            best = score
            checkpoint(best_path)
            log(f'new best {score:.4f} -> {best_path}')
            if tc.export_onnx:
                # A failed export must not kill a long run: log it, go on.
                try:
                    export_onnx(best_path, tc.export_onnx, overwrite=True)
                    log(f'exported {tc.export_onnx}')
                except Exception as exc:
                    log(f'ONNX export failed: {exc!r}')

    end = tc.steps if max_steps is None else min(tc.steps, step + max_steps)
    bar = tqdm(total=end, initial=step, disable=not progress, unit='step',
               mininterval=1.0 if sys.stderr.isatty() else 30.0,
               dynamic_ncols=True)
    window, t_window = [], time.perf_counter()
    net.train()
    last_loss = float('nan')
    data = batches(stream, tc.batch_size, model_config.halo_radius,
                   num_workers=tc.num_workers, border_weight=tc.border_weight)
    try:
        for batch in data:
            if step >= end:
                break
            x = batch['image'].to(device, non_blocking=True).contiguous(
                memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
            loss, det = criterion(logits.float(), batch['labels'].to(device),
                                  batch['halo_pix'].to(device),
                                  batch['halo_src'].to(device),
                                  batch['contaminated'].to(device),
                                  return_details=True,
                                  source_weights=batch['source_weight'].to(device),
                                  pixel_weights=batch['pixel_weight'].to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            n_live = int(torch.unique(det['colors']).numel())
            window.append([loss.item(), float(det['fg']), float(det['bg']),
                           det['source_ids'].numel(), len(det['pairs']), n_live,
                           float(det['neighbour'])])
            bar.update(1)
            if step % tc.log_every == 0:
                w = np.mean(window, axis=0)
                dt = time.perf_counter() - t_window
                last_loss = float(w[0])
                nb = f'neighbour {w[6]:.4f} ' if tc.neighbour_weight > 0 else ''
                log(f'step {step} loss {w[0]:.4f} fg {w[1]:.4f} bg {w[2]:.4f} {nb}'
                    f'sources/batch {w[3]:.0f} neighbour pairs/batch {w[4]:.0f} '
                    f'colours assigned {w[5]:.1f} lr {sched.get_last_lr()[0]:.2e} '
                    f'{dt / len(window):.2f}s/step')
                bar.set_postfix(loss=f'{w[0]:.4f}')
                window, t_window = [], time.perf_counter()
            if val_set is not None and step % tc.val_every == 0:
                validate()
                checkpoint(last_path)
            elif step % tc.checkpoint_every == 0:
                checkpoint(last_path)
    finally:
        bar.close()
        del data
    checkpoint(last_path)
    log(f'stopped at step {step}')
    return {'step': step, 'loss': last_loss, 'best_score': best,
            'last_validation': history[-1] if history else None}
