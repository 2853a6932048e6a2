"""The U-Net used by :class:`sklatom.segmentation.FCNSegmenter`.

A plain PyTorch module: an encoder of ``depth`` levels (two 3x3 convolutions, optional batch
norm, ReLU, then 2x2 max pooling), a bottleneck of two 3x3 convolutions with dilation
``dilation`` (a "dilated bottleneck" widens the context without more pooling) and a decoder
with 2x2 transposed convolutions and skip connections. With ``space_to_depth = s > 1`` the
network runs at ``1/s`` of the input resolution: each ``s x s`` block of input pixels becomes
``s**2`` channels (pixel unshuffle) and the logits are rearranged back to full resolution
(pixel shuffle), which cuts the computation about ``s**2``-fold. It returns logits of shape
``(batch, n_classes, height, width)``; height and width must be multiples of
``s * 2 ** depth`` (:attr:`UNet.size_multiple`).
"""

import copy

import torch
from torch import nn
from torch.nn.functional import pixel_shuffle, pixel_unshuffle
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["UNet", "receptive_field", "inference_copy"]


def _conv_block(in_ch, out_ch, dilation, batch_norm):
    layers = []
    for i in range(2):
        layers.append(
            nn.Conv2d(
                in_ch if i == 0 else out_ch,
                out_ch,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                bias=not batch_norm,
            )
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def receptive_field(depth, dilation, space_to_depth=1):
    """Return the largest one-sided reach of the U-Net in input pixels.

    An output pixel depends only on input pixels at most this many pixels away along rows or
    columns (for any alignment of the pooling grid). Tiling with a margin at least this large
    reproduces whole-image predictions up to floating-point rounding.

    Parameters
    ----------
    depth : int
        Number of pooling levels.
    dilation : int
        Dilation of the bottleneck convolutions.
    space_to_depth : int, default=1
        Block size of the pixel unshuffle in front of the network.

    Returns
    -------
    reach : int
        Reach in pixels.
    """
    # Track the one-sided reach (in input pixels) of a unit at each stage, with the stride
    # ``jump`` between neighbouring units. A 3x3 conv adds ``dilation * jump``; a 2x2 max pool
    # adds ``jump`` (a pooled unit covers two positions); a 2x2 stride-2 transposed conv maps
    # each output to exactly one input so adds nothing.
    reach, jump = 0, 1
    for _ in range(depth):
        reach += 2 * jump
        reach += jump
        jump *= 2
    reach += 2 * dilation * jump
    for _ in range(depth):
        jump //= 2
        reach += 2 * jump
    # a unit of the reduced grid covers s input pixels: an output pixel reaches its own
    # block (s - 1 px away at most) and ``reach`` blocks beyond it
    s = int(space_to_depth)
    return s * reach + s - 1


class UNet(nn.Module):
    """U-Net for per-pixel classification of single-channel images.

    Parameters
    ----------
    n_classes : int, default=2
        Number of output classes (channels of the logits).
    depth : int, default=3
        Number of pooling levels.
    base_filters : int, default=16
        Channels of the first level; doubled at each level.
    dilation : int, default=2
        Dilation of the two bottleneck convolutions (1 = ordinary convolutions).
    batch_norm : bool, default=True
        Batch normalisation after every convolution.
    dropout : float, default=0.1
        Channel dropout (``Dropout2d``) probability after the bottleneck.
    in_channels : int, default=1
        Input channels.
    space_to_depth : int, default=1
        Run the network at ``1/space_to_depth`` of the input resolution (pixel unshuffle in,
        pixel shuffle out); 1 = full resolution.

    Attributes
    ----------
    size_multiple : int
        Input height and width must be multiples of this, ``space_to_depth * 2 ** depth``.

    Notes
    -----
    The arguments are not checked here: :class:`~sklatom.segmentation.FCNSegmenter` checks
    its ``module__`` parameters (its table of parameter constraints) before it builds a U-Net.
    Used directly, torch refuses a width, dilation or number of classes below 1 (at the first
    forward pass) and a dropout outside [0, 1]; ``depth=0`` is a network without pooling.
    """

    def __init__(
        self,
        n_classes=2,
        depth=3,
        base_filters=16,
        dilation=2,
        batch_norm=True,
        dropout=0.1,
        in_channels=1,
        space_to_depth=1,
    ):
        super().__init__()
        self.depth = int(depth)
        self.dilation = int(dilation)
        self.space_to_depth = s = int(space_to_depth)
        self.size_multiple = s * 2**self.depth
        widths = [int(base_filters) * 2**i for i in range(self.depth + 1)]
        self.encoders = nn.ModuleList()
        ch = int(in_channels) * s * s
        for w in widths[:-1]:
            self.encoders.append(_conv_block(ch, w, 1, batch_norm))
            ch = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(ch, widths[-1], self.dilation, batch_norm)
        self.dropout = nn.Dropout2d(float(dropout))
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        ch = widths[-1]
        for w in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(ch, w, kernel_size=2, stride=2))
            self.decoders.append(_conv_block(2 * w, w, 1, batch_norm))
            ch = w
        self.head = nn.Conv2d(ch, int(n_classes) * s * s, kernel_size=1)

    def encode(self, x):
        """Encoder and bottleneck: the bottleneck features and the skips, deepest last."""
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x), skips

    def forward(self, x):
        x, skips = self.encode(self.to_blocks(x))
        x = self.dropout(x)
        for up, dec, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.from_blocks(self.head(x))

    def to_blocks(self, x):
        """``(batch, c, h, w)`` -> ``(batch, c * s**2, h / s, w / s)``, s = space_to_depth."""
        return pixel_unshuffle(x, self.space_to_depth) if self.space_to_depth > 1 else x

    def from_blocks(self, x):
        """The inverse of :meth:`to_blocks`: the head's output at full resolution."""
        return pixel_shuffle(x, self.space_to_depth) if self.space_to_depth > 1 else x


# the private oneDNN kernel, where this torch has it; everything else (and any torch without
# it) takes the public ``conv2d``, which gives the same result (tested)
_MKLDNN_CONV = getattr(torch.ops.aten, "mkldnn_convolution", None) if hasattr(
    torch.ops, "aten") else None


def _on_mkldnn(x):
    return (_MKLDNN_CONV is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.enabled)


class _Conv(nn.Module):
    """A frozen convolution that takes oneDNN's kernel on a CPU whatever the input size.

    torch falls back to a slower native kernel for a single image with fewer than 20,480
    input values (the bottleneck of a 256 px image: three times slower, measured with torch
    2.13); calling ``aten.mkldnn_convolution`` directly skips that rule. ``weight`` may be a
    slice of a larger convolution's weight (see :func:`_split_skip`).
    """

    def __init__(self, weight, bias, conv):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.padding, self.dilation = list(conv.padding), list(conv.dilation)

    def forward(self, x):
        if _on_mkldnn(x):
            return _MKLDNN_CONV(x, self.weight, self.bias, self.padding, [1, 1],
                                self.dilation, 1)
        return nn.functional.conv2d(x, self.weight, self.bias, padding=self.padding,
                                    dilation=self.dilation)


def _split_skip(conv, n_up):
    """Two convolutions whose sum equals ``conv`` (a :class:`_Conv`) applied to
    ``cat([up, skip])``.

    ``n_up`` is the number of channels of ``up``; the first returned convolution (on ``up``)
    carries the bias.
    """
    return (_Conv(conv.weight[:, :n_up], conv.bias, conv),
            _Conv(conv.weight[:, n_up:], None, conv))


class _BlockLinear(nn.Module):
    """A ``k x k``, stride ``k`` transposed convolution as one matrix product.

    Each input pixel becomes a ``k x k`` block of output pixels: ``weight`` is
    ``(in, out, k, k)`` as in :class:`torch.nn.ConvTranspose2d` and ``bias`` ``(out * k * k,)``
    (one value per output channel and block position). This covers the decoder's 2x2
    upsampling and the 1x1 head followed by the pixel shuffle back to full resolution, and it
    is faster on a CPU than either (torch has no oneDNN path for them at batch size one). The
    output is channels-last, or contiguous with ``contiguous=True``.
    """

    def __init__(self, weight, bias, contiguous=False):
        super().__init__()
        n_in, self.n_out, self.k, _ = weight.shape
        self.register_buffer("matrix", weight.detach().reshape(n_in, -1).clone())
        self.register_buffer("bias", bias.detach().clone())
        self.contiguous = contiguous

    def forward(self, x):
        n, c, h, w = x.shape
        y = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(-1, c), self.matrix)
        y = y.view(n, h, w, self.n_out, self.k, self.k)
        H, W = h * self.k, w * self.k
        if self.contiguous:
            return y.permute(0, 3, 1, 4, 2, 5).reshape(n, self.n_out, H, W).contiguous()
        return y.permute(0, 1, 4, 2, 5, 3).reshape(n, H, W, self.n_out).permute(0, 3, 1, 2)


class _MaxPool2x2(nn.Module):
    """2x2 max pooling of a channels-last tensor with even height and width.

    The maximum of four strided views: the same values as ``nn.MaxPool2d(2)``, about ten times
    faster on a CPU for the few channels of the first levels (measured with torch 2.13).
    """

    def forward(self, x):
        v = x.permute(0, 2, 3, 1)  # (batch, height, width, channels), a contiguous view
        rows = torch.maximum(v[:, 0::2], v[:, 1::2])
        return torch.maximum(rows[:, :, 0::2], rows[:, :, 1::2]).permute(0, 3, 1, 2)


def _frozen_block(block):
    """A conv block with batch norm folded into the convolutions, as :class:`_Conv` layers."""
    layers, out = list(block), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, nn.Conv2d):
            if layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            layer = _Conv(layer.weight, layer.bias, layer)
        out.append(layer)
    return nn.Sequential(*out)


class _FrozenUNet(nn.Module):
    """The prediction-only form of a :class:`UNet` that :func:`inference_copy` returns.

    Batch norm is folded into the convolutions, which always use oneDNN on a CPU
    (:class:`_Conv`). Every decoder's first convolution is split into one on the upsampled
    features and one on the skip connection, summed, instead of one on their concatenation:
    the same function without copying both into a new tensor. Pooling is
    :class:`_MaxPool2x2`; upsampling and the head are matrix products (:class:`_BlockLinear`).
    Activations stay channels-last (CPU convolutions are about twice as fast in it).
    """

    def __init__(self, unet):
        super().__init__()
        s = self.space_to_depth = unet.space_to_depth
        self.encoders = nn.ModuleList(_frozen_block(b) for b in unet.encoders)
        self.bottleneck = _frozen_block(unet.bottleneck)
        self.pool = _MaxPool2x2()
        self.upsamplers = nn.ModuleList(
            _BlockLinear(up.weight, up.bias.repeat_interleave(4)) for up in unet.upsamplers)
        self.from_up, self.from_skip, self.decoders = (nn.ModuleList() for _ in range(3))
        for up, dec in zip(unet.upsamplers, unet.decoders):
            first, *rest = _frozen_block(dec)
            a, b = _split_skip(first, up.out_channels)
            self.from_up.append(a)
            self.from_skip.append(b)
            self.decoders.append(nn.Sequential(*rest))
        w = unet.head.weight[:, :, 0, 0]  # (n_classes * s * s, channels)
        self.head = _BlockLinear(w.t().reshape(w.shape[1], -1, s, s), unet.head.bias,
                                 contiguous=True)

    encode, to_blocks = UNet.encode, UNet.to_blocks

    def forward(self, x):
        x = self.to_blocks(x).contiguous(memory_format=torch.channels_last)
        return self.decode(*self.encode(x))  # (dropout is the identity at prediction)

    def forward_with_features(self, x):
        """The logits and the bottleneck features ``(batch, channels, h / m, w / m)`` (``m``
        the size multiple): the same logits as :meth:`forward`."""
        x = self.to_blocks(x).contiguous(memory_format=torch.channels_last)
        bottleneck, skips = self.encode(x)
        return self.decode(bottleneck, skips), bottleneck

    def decode(self, x, skips):
        """Decoder and head: logits at full resolution from the bottleneck and the skips."""
        for up, a, b, dec, skip in zip(self.upsamplers, self.from_up, self.from_skip,
                                       self.decoders, reversed(skips)):
            y = a(up(x))
            y += b(skip)
            x = dec(y)
        return self.head(x)  # at full resolution: the pixel shuffle is part of the head


def inference_copy(module):
    """Return a fast, frozen copy of a U-Net for prediction.

    The copy computes the same function as ``module.eval()`` up to float rounding, faster (see
    :class:`_FrozenUNet`): batch norm folded into the convolutions, skip connections added
    through split convolutions instead of concatenated, pooling, upsampling and the head
    rewritten for speed, channels-last layout. Its weights are buffers, not parameters (no
    gradients). The original module is left untouched (it can still be trained).

    Parameters
    ----------
    module : UNet
        A trained network.

    Returns
    -------
    frozen : torch.nn.Module
        The copy, in eval mode with gradients disabled; feed it channels-last input
        ``(batch, in_channels, height, width)``.
    """
    frozen = _FrozenUNet(copy.deepcopy(module).eval()).eval()
    frozen = frozen.to(memory_format=torch.channels_last)
    return frozen
