# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Execution backends: run the deep-coloring network on batches of tiles.

Every backend has the same array-in, array-out contract: `Backend.run`
takes float32 ``(N, 1, H, W)`` normalised images and returns float32
``(N, n_colors + 1, H, W)`` probabilities.

- `OnnxRuntimeBackend` runs the model file with onnxruntime: the
  ``CPUExecutionProvider`` (intra-op threads = number of CPU cores), or
  ``CUDAExecutionProvider`` / ``TensorrtExecutionProvider`` when the
  ``onnxruntime-gpu`` package provides them.
- `TorchBackend` runs the model with PyTorch (CPU or CUDA, optionally in
  float16/bfloat16 on CUDA): it builds `astro_deepcolor.model.unet.UNet`
  from the configuration stored with the weights and loads the weights by
  name from the file (`build_torch_network`), so there is one forward pass
  in the package, the one that was trained.

`resolve_backend` implements ``backend='auto'``: CUDA torch, then
onnxruntime CUDA, then onnxruntime CPU. It imports torch only when an
NVIDIA driver is present, so CPU-only machines never pay for it.
"""

import os
from pathlib import Path

import numpy as np

from astro_deepcolor.exceptions import ModelError
from astro_deepcolor.utils._parameters import check_choice

__all__ = ['BACKENDS', 'Backend', 'OnnxRuntimeBackend', 'TorchBackend',
           'build_torch_network', 'resolve_backend']

#: Backend names accepted by ``DeepColorSegmentation(backend=...)``.
BACKENDS = ('auto', 'onnxruntime', 'torch')

#: Devices accepted by ``DeepColorSegmentation(device=...)``.
DEVICES = ('auto', 'cpu', 'cuda')

_PRECISIONS = ('float32', 'float16', 'bfloat16')


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _has_nvidia_driver():
    return Path('/proc/driver/nvidia/version').exists()


def _torch_cuda_available():
    import importlib.util

    if importlib.util.find_spec('torch') is None or not _has_nvidia_driver():
        return False
    import torch

    return bool(torch.cuda.is_available())


def _ort_providers():
    import onnxruntime as ort

    return list(ort.get_available_providers())


class Backend:
    """
    Base class: run a model on batches of normalised image tiles.

    Attributes
    ----------
    name : str
        Backend name (``'onnxruntime'`` or ``'torch'``).
    device : str
        Device actually used (``'cpu'`` or ``'cuda'``), with details in
        `description`.
    """

    name = None

    def __init__(self, model):
        self.model = model
        self.n_outputs = model.config.n_outputs

    def __repr__(self):
        return f'<{type(self).__name__} {self.description}>'

    @property
    def description(self):
        """One-line description of the backend and device."""
        return f'{self.name} on {self.device}'

    def run(self, batch):
        """
        Run the network.

        Parameters
        ----------
        batch : 4D `~numpy.ndarray` of float32
            ``(N, 1, H, W)`` normalised images; ``H`` and ``W`` multiples
            of the model's ``tile_multiple``.

        Returns
        -------
        probs : 4D `~numpy.ndarray` of float32
            ``(N, n_colors + 1, H, W)`` probabilities.
        """
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    """
    Run the model with onnxruntime.

    Parameters
    ----------
    model : `~astro_deepcolor.model.LoadedModel`
        The model.
    device : {'cpu', 'cuda'}, optional
        ``'cuda'`` uses the TensorRT (if available) and CUDA execution
        providers and raises if neither is installed.
    n_threads : int, optional
        Intra-op threads of the CPU provider (default: the number of CPU
        cores available to this process).
    """

    name = 'onnxruntime'

    def __init__(self, model, device='cpu', *, n_threads=None):
        super().__init__(model)
        check_choice(device, 'device', ('cpu', 'cuda'))
        available = _ort_providers()
        if device == 'cuda':
            providers = [p for p in ('TensorrtExecutionProvider',
                                     'CUDAExecutionProvider')
                         if p in available]
            if not providers:
                msg = ("device='cuda' with backend='onnxruntime' needs the "
                       'onnxruntime-gpu package (available providers: '
                       f'{available})')
                raise ValueError(msg)
        else:
            providers = []
        providers.append('CPUExecutionProvider')
        self.device = device
        self.n_threads = _cpu_count() if n_threads is None else int(n_threads)
        self.session = model.make_session(providers,
                                          intra_op_num_threads=self.n_threads)
        self.providers = list(self.session.get_providers())

    @property
    def description(self):
        """One-line description of the backend and device."""
        return (f'onnxruntime on {self.device} ({self.providers[0]}, '
                f'{self.n_threads} threads)')

    def run(self, batch):
        """
        Run the network.

        Parameters
        ----------
        batch : 4D `~numpy.ndarray` of float32
            ``(N, 1, H, W)`` normalised images.

        Returns
        -------
        probs : 4D `~numpy.ndarray` of float32
            ``(N, n_colors + 1, H, W)`` probabilities.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(['probs'], {'image': batch})[0]


# ---------------------------------------------------------------------------
# The U-Net of the model file's configuration, with its weights


def _onnx_weights(onnx_bytes):
    """The model file's initializers, by name (``net.`` prefix removed)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    out = {}
    for init in graph.initializer:
        name = init.name.removeprefix('net.')
        out[name] = numpy_helper.to_array(init)
    return out


def build_torch_network(model):
    """
    The `~astro_deepcolor.model.unet.UNet` of a model file, with its weights.

    The network is built from the configuration stored with the weights
    (``model.config``) and the weights are loaded by parameter name from
    the ONNX initializers. The exporter folds every BatchNorm into the
    preceding convolution (initializers ``<conv>.weight`` and
    ``<conv>.weight_bias``); the network is folded the same way (BatchNorm
    replaced by the identity, the folded bias on the convolution). Files
    that keep their BatchNorm parameters load as they are.

    Parameters
    ----------
    model : `~astro_deepcolor.model.LoadedModel`
        The model file.

    Returns
    -------
    net : `~astro_deepcolor.model.unet.UNet`
        In eval mode, on the CPU.

    Raises
    ------
    ModelError
        If the file's weights do not match the configuration (names or
        shapes): such a file still runs with ``backend='onnxruntime'``.
    """
    import torch
    from torch import nn

    from astro_deepcolor.model.unet import ConvBlock, UNet

    weights = _onnx_weights(model.onnx_bytes)
    net = UNet(model.config)
    folded = set()
    if not all(k in weights for k in net.state_dict()):
        # folded export: BatchNorm -> identity, bias on the convolution
        for prefix, block in net.named_modules():
            if isinstance(block, ConvBlock):
                for i in (0, 3):
                    conv = block[i]
                    block[i + 1] = nn.Identity()
                    conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
                    folded.add(f'{prefix}.{i}.bias')
    state = {}
    missing = []
    for key, value in net.state_dict().items():
        name = key
        if key in folded:
            name = key[:-len('.bias')] + '.weight_bias'
            if name not in weights:  # the exporter drops an all-zero bias
                state[key] = torch.zeros_like(value)
                continue
        if name not in weights or tuple(weights[name].shape) != tuple(value.shape):
            missing.append(key)
            continue
        state[key] = torch.from_numpy(np.array(weights[name], copy=True))
    if missing:
        msg = (f'model file {str(model.path)!r}: its weights do not match its '
               f'configuration (missing or mis-shaped: {missing[:5]}); the '
               'torch backend builds the network from the configuration, use '
               'backend="onnxruntime" for this file')
        raise ModelError(msg)
    net.load_state_dict(state)
    return net.eval()


class TorchBackend(Backend):
    """
    Run the model's U-Net with PyTorch (see `build_torch_network`).

    Parameters
    ----------
    model : `~astro_deepcolor.model.LoadedModel`
        The model.
    device : {'cpu', 'cuda'}, optional
        Torch device.
    precision : {'float32', 'float16', 'bfloat16'}, optional
        Arithmetic precision; half precisions need ``device='cuda'``. The
        softmax is always computed in float32.
    """

    name = 'torch'

    def __init__(self, model, device='cpu', *, precision='float32'):
        super().__init__(model)
        check_choice(device, 'device', ('cpu', 'cuda'))
        check_choice(precision, 'precision', _PRECISIONS)
        try:
            import torch
        except ImportError:
            msg = "backend='torch' needs PyTorch (pip install torch)"
            raise ValueError(msg) from None
        try:
            import onnx  # noqa: F401
        except ImportError:
            msg = "backend='torch' needs the onnx package (pip install onnx)"
            raise ValueError(msg) from None
        if device == 'cuda' and not torch.cuda.is_available():
            msg = "device='cuda' was requested but torch sees no CUDA device"
            raise ValueError(msg)
        if precision != 'float32' and device != 'cuda':
            msg = (f'precision={precision!r} is only supported on CUDA '
                   "devices; use precision='float32' on the CPU")
            raise ValueError(msg)
        self.device = device
        self.precision = precision
        self._dtype = getattr(torch, precision)
        self._module = build_torch_network(model).to(device, self._dtype)

    @property
    def description(self):
        """One-line description of the backend and device."""
        return f'torch on {self.device} ({self.precision})'

    def run(self, batch):
        """
        Run the network.

        Parameters
        ----------
        batch : 4D `~numpy.ndarray` of float32
            ``(N, 1, H, W)`` normalised images.

        Returns
        -------
        probs : 4D `~numpy.ndarray` of float32
            ``(N, n_colors + 1, H, W)`` probabilities.
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            x = x.to(self.device, self._dtype)
            logits = self._module(x)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()


def resolve_backend(model, backend='auto', device='auto', *,
                    precision='float32', n_threads=None):
    """
    Create the backend for a ``backend``/``device`` request.

    Parameters
    ----------
    model : `~astro_deepcolor.model.LoadedModel`
        The model.
    backend : {'auto', 'onnxruntime', 'torch'}, optional
        ``'auto'`` picks the fastest available: torch on CUDA, then
        onnxruntime on CUDA, then onnxruntime on the CPU.
    device : {'auto', 'cpu', 'cuda'}, optional
        ``'auto'`` uses CUDA when the chosen backend can.
    precision : {'float32', 'float16', 'bfloat16'}, optional
        Torch backend only.
    n_threads : int, optional
        CPU threads: onnxruntime intra-op threads, or
        ``torch.set_num_threads`` (process-wide) for torch on the CPU.
        Default: every core the process may use.

    Returns
    -------
    backend : `Backend`
        The ready-to-run backend.
    """
    check_choice(backend, 'backend', BACKENDS)
    check_choice(device, 'device', DEVICES)
    check_choice(precision, 'precision', _PRECISIONS)
    if backend == 'onnxruntime' and precision != 'float32':
        msg = (f'precision={precision!r} needs backend="torch"; onnxruntime '
               'runs the model in float32')
        raise ValueError(msg)
    if backend == 'auto':
        if device in ('auto', 'cuda') and _torch_cuda_available():
            return TorchBackend(model, 'cuda', precision=precision)
        ort_cuda = any(p in _ort_providers() for p in
                       ('CUDAExecutionProvider', 'TensorrtExecutionProvider'))
        if device in ('auto', 'cuda') and ort_cuda:
            return OnnxRuntimeBackend(model, 'cuda')
        if device == 'cuda':
            msg = ("device='cuda' was requested but neither torch nor "
                   'onnxruntime can use a CUDA device here')
            raise ValueError(msg)
        if precision != 'float32':
            msg = (f'precision={precision!r} needs a CUDA device; none is '
                   'available here')
            raise ValueError(msg)
        return OnnxRuntimeBackend(model, 'cpu', n_threads=n_threads)
    if backend == 'torch':
        if device == 'auto':
            device = 'cuda' if _torch_cuda_available() else 'cpu'
        if device == 'cpu' and n_threads is not None:
            import torch

            torch.set_num_threads(int(n_threads))
        return TorchBackend(model, device, precision=precision)
    if device == 'auto':
        ort_cuda = any(p in _ort_providers() for p in
                       ('CUDAExecutionProvider', 'TensorrtExecutionProvider'))
        device = 'cuda' if ort_cuda else 'cpu'
    return OnnxRuntimeBackend(model, device, n_threads=n_threads)
