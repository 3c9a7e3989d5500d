# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The deep-coloring U-Net (PyTorch; imported only for training and export).

Architecture (``depth`` = 3, ``width`` = 16 shown)::

    image (N, 1, H, W), units of the noise rms
      -> asinh(x / asinh_scale)                       inside the graph
      -> [conv3x3-BN-ReLU] x 2   16 ch   ------------------------------.
      -> maxpool 2 -> [..] x 2   32 ch   ---------------------.        |
      -> maxpool 2 -> [..] x 2   64 ch   ------------.        |        |
      -> maxpool 2 -> [..] x 2  128 ch (bottleneck)  |        |        |
      -> up 2x (transposed conv) + concat <----------'        |        |
      -> [..] x 2 64 ch -> up + concat <----------------------'        |
      -> [..] x 2 32 ch -> up + concat <-------------------------------'
      -> [..] x 2 16 ch -> conv1x1 -> n_colors + 1 ch -> softmax

BatchNorm layers are folded into the convolutions by the ONNX exporter
(constant folding in eval mode) and by onnxruntime's graph optimiser, so
they cost nothing at inference.
"""

import torch
from torch import nn

from astro_deepcolor.model.config import ModelConfig

__all__ = ['ConvBlock', 'ProbabilityWrapper', 'SourceXtractorWrapper', 'UNet',
           'grow_state_dict', 'network_from_checkpoint']


class ConvBlock(nn.Sequential):
    """(convolution 3x3 => BatchNorm => ReLU) * 2."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """
    U-Net producing a softmax over background + ``n_colors`` colours.

    Parameters
    ----------
    config : `~astro_deepcolor.model.ModelConfig`, optional
        Architecture (``depth``, ``width``, ``n_colors``, ``asinh_scale``).
        The default configuration when omitted.

    Notes
    -----
    `forward` returns logits; `predict` (and the exported ONNX graph)
    returns probabilities. Input height and width must be multiples of
    ``config.tile_multiple``.
    """

    def __init__(self, config=None):
        super().__init__()
        if config is None:
            config = ModelConfig()
        if not isinstance(config, ModelConfig):
            msg = f'config must be a ModelConfig, got {type(config).__name__}'
            raise TypeError(msg)
        self.config = config
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        in_ch = 1
        for w in widths[:-1]:
            self.encoders.append(ConvBlock(in_ch, w))
            in_ch = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(widths[-2], widths[-1])
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth)):
            self.ups.append(nn.ConvTranspose2d(widths[level + 1],
                                               widths[level], 2, stride=2))
            self.decoders.append(ConvBlock(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(widths[0], config.n_outputs, 1)
        self.register_buffer('inv_scale', torch.tensor(1.0 / config.asinh_scale))

    def forward(self, x):
        """
        Return the logits (N, n_colors + 1, H, W) for images (N, 1, H, W).

        Parameters
        ----------
        x : `torch.Tensor`
            Normalised images, ``(data - background) / rms``.

        Returns
        -------
        logits : `torch.Tensor`
            Un-normalised class scores; channel 0 is the background.
        """
        x = torch.asinh(x * self.inv_scale)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips),
                                 strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def predict(self, x):
        """
        Return the softmax probabilities for images (N, 1, H, W).

        Parameters
        ----------
        x : `torch.Tensor`
            Normalised images.

        Returns
        -------
        probs : `torch.Tensor`
            Probabilities summing to 1 over the channel axis.
        """
        return torch.softmax(self(x), dim=1)


class ProbabilityWrapper(nn.Module):
    """NCHW image -> NCHW probabilities (the astro_deepcolor ONNX form)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        """Run the network and the softmax."""
        return torch.softmax(self.net(image), dim=1)


class SourceXtractorWrapper(nn.Module):
    """
    NHWC tile -> NHWC colour planes, the form SourceXtractor++ runs.

    The input is background-subtracted and divided by the rms; the output
    has one plane per colour (``n_colors``) and no background plane.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        """Run the network on an NHWC tile."""
        probs = torch.softmax(self.net(image.permute(0, 3, 1, 2)), dim=1)
        return probs[:, 1:].permute(0, 2, 3, 1)


def grow_state_dict(state, config, net):
    """
    Weights of a trained U-Net placed into a U-Net one level deeper.

    A depth-``d`` network's encoders, its decoders and its head have the
    shapes of the outer ``d`` levels of a depth ``d + 1`` network of the
    same width, and its bottleneck the shape of the deeper network's last
    encoder. Those are copied; the new bottleneck, the new innermost
    up-sampling and decoder keep ``net``'s own (fresh) weights. This is how
    a deeper network is started from a trained shallower one (the
    "net2net" idea of Chen et al. 2016, without its exact function
    preservation).

    Parameters
    ----------
    state : dict
        ``state_dict`` of the trained network.
    config : `~astro_deepcolor.model.ModelConfig`
        Configuration of the trained network.
    net : `UNet`
        The deeper network (its configuration must equal ``config`` except
        for ``depth``, which must be one more).

    Returns
    -------
    grown : dict
        A ``state_dict`` for ``net``.
    """
    new = net.config
    if new.replace(depth=config.depth) != config or new.depth != config.depth + 1:
        msg = (f'a depth-{config.depth} network can only grow into one of depth '
               f'{config.depth + 1} with otherwise the same configuration, '
               f'got {new.to_json()}')
        raise ValueError(msg)
    d = config.depth
    grown = dict(net.state_dict())
    for key, value in state.items():
        head, _, rest = key.partition('.')
        if head == 'bottleneck':
            target = f'encoders.{d}.{rest}'
        elif head in ('ups', 'decoders'):
            index, _, tail = rest.partition('.')
            target = f'{head}.{int(index) + 1}.{tail}'
        else:
            target = key
        if target not in grown or grown[target].shape != value.shape:
            msg = f'cannot place {key!r} of shape {tuple(value.shape)} as {target!r}'
            raise ValueError(msg)
        grown[target] = value
    return grown


def network_from_checkpoint(path):
    """
    Rebuild a `UNet` from a training checkpoint file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        A checkpoint written by `astro_deepcolor.training.train`.

    Returns
    -------
    net : `UNet`
        The network with the checkpoint's weights, in eval mode.
    """
    from pathlib import Path

    from astro_deepcolor.exceptions import ModelError

    path = Path(path)
    if not path.is_file():
        msg = f'checkpoint file {str(path)!r} does not exist'
        raise FileNotFoundError(msg)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # pickle/zip errors of several types
        msg = f'checkpoint file {str(path)!r} cannot be read: {exc}'
        raise ModelError(msg) from None
    if not isinstance(state, dict) or 'model' not in state or 'config' not in state:
        msg = (f'checkpoint file {str(path)!r} lacks the model weights or '
               'configuration')
        raise ModelError(msg)
    net = UNet(ModelConfig.from_dict(state['config']))
    net.load_state_dict(state['model'])
    return net.eval()
