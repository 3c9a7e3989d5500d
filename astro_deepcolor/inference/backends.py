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
- `TorchBackend` runs the same ONNX graph with PyTorch (CPU or CUDA,
  optionally in float16/bfloat16 on CUDA). It does not need the training
  code: the graph is interpreted node by node with ``torch.nn.functional``
  using the weights stored in the ONNX initializers, so any model file
  made of the supported operators runs, whatever its architecture.

`resolve_backend` implements ``backend='auto'``: CUDA torch, then
onnxruntime CUDA, then onnxruntime CPU. It imports torch only when an
NVIDIA driver is present, so CPU-only machines never pay for it.
"""

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from astro_deepcolor.exceptions import ModelError
from astro_deepcolor.utils._parameters import check_choice

__all__ = ['BACKENDS', 'Backend', 'OnnxRuntimeBackend', 'TorchBackend',
           'resolve_backend']

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
# ONNX graph interpreter in PyTorch


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads_to_torch(pads):
    # ONNX pads: (y_begin, x_begin, y_end, x_end)
    if not pads:
        return 0, None
    y0, x0, y1, x1 = pads
    if y0 == y1 and x0 == x1:
        return (y0, x0), None
    return 0, (x0, x1, y0, y1)


class _OnnxTorchModule:
    """Evaluate an ONNX graph with torch tensors (inference only)."""

    def __init__(self, onnx_bytes, device):
        import onnx
        import torch
        from onnx import numpy_helper

        graph = onnx.load_from_string(onnx_bytes).graph
        self.device = torch.device(device)
        self.consts = {}
        for init in graph.initializer:
            arr = numpy_helper.to_array(init)
            self.consts[init.name] = torch.from_numpy(arr.copy()).to(self.device)
        self.nodes = list(graph.node)
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        unsupported = sorted({n.op_type for n in self.nodes} - set(self._OPS))
        if unsupported:
            msg = ('the torch backend cannot run operators '
                   f'{unsupported} of this model; use backend="onnxruntime"')
            raise ModelError(msg)
        for node in self.nodes:
            if node.op_type == 'Constant':
                value = _attrs(node)['value']
                arr = numpy_helper.to_array(value)
                self.consts[node.output[0]] = torch.from_numpy(
                    arr.copy()).to(self.device)
        self.attrs = [_attrs(n) for n in self.nodes]

    def cast(self, dtype):
        """Cast floating-point weights to ``dtype`` (half precision)."""
        for k, v in self.consts.items():
            if v.is_floating_point():
                self.consts[k] = v.to(dtype)

    def __call__(self, x):
        env = dict(self.consts)
        env[self.input_name] = x
        for node, attrs in zip(self.nodes, self.attrs, strict=True):
            if node.op_type == 'Constant':
                continue
            args = [env[i] if i else None for i in node.input]
            out = self._OPS[node.op_type](self, args, attrs)
            if not isinstance(out, tuple):
                out = (out,)
            for name, value in zip(node.output, out, strict=False):
                env[name] = value
        return env[self.output_name]

    # -- operators ----------------------------------------------------------

    def _conv(self, args, attrs):
        import torch.nn.functional as F

        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        padding, explicit = _pads_to_torch(attrs.get('pads'))
        if explicit is not None:
            x = F.pad(x, explicit)
        return F.conv2d(x, w, b, stride=tuple(attrs.get('strides', (1, 1))),
                        padding=padding,
                        dilation=tuple(attrs.get('dilations', (1, 1))),
                        groups=attrs.get('group', 1))

    def _conv_transpose(self, args, attrs):
        import torch.nn.functional as F

        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        pads = attrs.get('pads') or (0, 0, 0, 0)
        if pads[0] != pads[2] or pads[1] != pads[3]:
            msg = 'asymmetric ConvTranspose padding is not supported'
            raise ModelError(msg)
        return F.conv_transpose2d(
            x, w, b, stride=tuple(attrs.get('strides', (1, 1))),
            padding=(pads[0], pads[1]),
            output_padding=tuple(attrs.get('output_padding', (0, 0))),
            groups=attrs.get('group', 1),
            dilation=tuple(attrs.get('dilations', (1, 1))))

    def _max_pool(self, args, attrs):
        import torch.nn.functional as F

        padding, explicit = _pads_to_torch(attrs.get('pads'))
        x = args[0]
        if explicit is not None:
            x = F.pad(x, explicit, value=float('-inf'))
        return F.max_pool2d(x, tuple(attrs['kernel_shape']),
                            stride=tuple(attrs.get('strides', (1, 1))),
                            padding=padding,
                            ceil_mode=bool(attrs.get('ceil_mode', 0)))

    def _batch_norm(self, args, attrs):
        import torch.nn.functional as F

        x, scale, bias, mean, var = args[:5]
        return F.batch_norm(x, mean, var, scale, bias, training=False,
                            eps=attrs.get('epsilon', 1e-5))

    def _resize(self, args, attrs):
        import torch.nn.functional as F

        x = args[0]
        scales = args[2] if len(args) > 2 else None
        sizes = args[3] if len(args) > 3 else None
        mode = attrs.get('mode', b'nearest')
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != 'nearest':
            msg = f'Resize mode {mode!r} is not supported by the torch backend'
            raise ModelError(msg)
        if sizes is not None and sizes.numel():
            return F.interpolate(x, size=tuple(int(s) for s in sizes[-2:]),
                                 mode='nearest')
        factors = tuple(float(s) for s in scales[-2:])
        return F.interpolate(x, scale_factor=factors, mode='nearest')

    def _softmax(self, args, attrs):
        import torch

        # Softmax in float32 even in half precision runs.
        x = args[0]
        return torch.softmax(x.float(), dim=attrs.get('axis', -1)).to(x.dtype)

    def _concat(self, args, attrs):
        import torch

        return torch.cat(args, dim=attrs['axis'])

    def _binary(op):
        def run(self, args, attrs):
            return op(args[0], args[1])
        return run

    def _unary(name):
        def run(self, args, attrs):
            import torch

            return getattr(torch, name)(args[0])
        return run

    def _leaky_relu(self, args, attrs):
        import torch.nn.functional as F

        return F.leaky_relu(args[0], attrs.get('alpha', 0.01))

    def _identity(self, args, attrs):
        return args[0]

    def _clip(self, args, attrs):
        import torch

        lo = args[1] if len(args) > 1 else attrs.get('min')
        hi = args[2] if len(args) > 2 else attrs.get('max')
        return torch.clamp(args[0], lo, hi)

    _OPS: ClassVar[dict] = {
        'Conv': _conv,
        'ConvTranspose': _conv_transpose,
        'MaxPool': _max_pool,
        'BatchNormalization': _batch_norm,
        'Resize': _resize,
        'Softmax': _softmax,
        'Concat': _concat,
        'Add': _binary(lambda a, b: a + b),
        'Sub': _binary(lambda a, b: a - b),
        'Mul': _binary(lambda a, b: a * b),
        'Div': _binary(lambda a, b: a / b),
        'Relu': _unary('relu'),
        'Sigmoid': _unary('sigmoid'),
        'Tanh': _unary('tanh'),
        'Asinh': _unary('asinh'),
        'Exp': _unary('exp'),
        'Log': _unary('log'),
        'Sqrt': _unary('sqrt'),
        'Neg': _unary('neg'),
        'LeakyRelu': _leaky_relu,
        'Identity': _identity,
        'Clip': _clip,
        'Constant': _identity,
    }
    del _binary, _unary


class TorchBackend(Backend):
    """
    Run the model's ONNX graph with PyTorch.

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
        self._module = _OnnxTorchModule(model.onnx_bytes, device)
        if precision != 'float32':
            self._module.cast(self._dtype)

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
            y = self._module(x)
            return y.float().cpu().numpy()


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
