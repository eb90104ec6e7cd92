"""The CAM graph: image -> logits and per-layer Grad-CAM maps, with its backward written out.

Grad-CAM needs d(logit_c)/dA at each CAM layer. An engine (ONNX Runtime, TensorRT) runs no
autograd, so the modules here spell the backward out as forward ops, the way
gradient_graph.py does for the fusion loss: from the classifier's last layer down to the
shallowest CAM layer, each op is replaced by its transpose (Jacobian^T), applied to the
gradient:

    linear y = W x          ->  g_x = W^T g_y            (a MatMul with the same weights)
    global average pool     ->  g spread evenly: g_y / (h w) at every pixel
    ReLU6 / ReLU            ->  g * (0 < z < 6) / g * (z > 0), z the pre-activation
    1x1 conv                ->  1x1 conv with in/out channels swapped
    kxk stride-1 conv       ->  conv with the kernel flipped and in/out swapped, same padding
    kxk stride-2 conv (TF "same", asymmetric padding)
                            ->  conv_transpose2d (stride 2, no padding), then the rows and
                                columns the forward's padding added are cut off
    2x2 max-pool            ->  each gradient to its window's first maximum (row-major, as
                                torch's max_pool2d picks), by equality masks, not indices
    residual add            ->  the gradient goes to both branches and is summed

Batch norm (eval mode) is folded into the convolutions first, so a conv+BN pair is one
affine map and its transpose one op. No weight gradients are formed.

The K requested classes ride along as a second batch axis: the backward is linear in its
seed (the masks come from the forward and do not depend on the class), so the gradients of
all K classes of all N images are one (K*N, C, h, w) pass, laid out class-major so a
forward mask (N, C, h, w) broadcasts over the leading K.

Two input conventions (the graph "mode"):
  * classes: inputs `image` (N, 3, S, S) float32 RGB 0..255 and `classes` (N, K) int64;
    outputs `logits` (N, 1000), `class_weights` (N, K), `cam0..cam2` (N, K, h_l, w_l).
  * top-K (K fixed when the graph is built, so TopK has a constant k as TensorRT wants):
    input `image` only; outputs `logits`, `classes` (N, K) int64 (most probable first),
    `class_weights` (N, K) and `cam0..cam2`.
class_weights are the classes' softmax probabilities renormalised to sum to 1, as in
engine/semantic/cam.py. The maps are ReLU(sum_m alpha_m A_m) at each layer's native resolution;
normalising, upsampling to the image size and averaging them is left to the runner (it is
the same `combine_layer_maps` the Torch path uses, and an arbitrary output H x W is a
runtime value, awkward to bake into a static-shape engine).
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.efficientnet_lite import CAM_LAYERS as EFFICIENTNET_CAM_LAYERS
from semfuse_rt.export.networks.efficientnet_lite import EfficientNetLite, MBConvBlock, same_padding
from semfuse_rt.export.networks.normalisation import Normalisation
from semfuse_rt.export.networks.vgg19_classifier import POOL_SIZE, TRUNK_CHANNELS, VGG19Classifier

# Output names of the per-layer maps, shallow to deep (the order of Classifier.cam_layers).
MAP_NAMES = ("cam0", "cam1", "cam2")


def io_names(top_k: int | None) -> dict[str, list[str]]:
    if top_k is None:
        return {"inputs": ["image", "classes"], "outputs": ["logits", "class_weights", *MAP_NAMES]}
    return {"inputs": ["image"], "outputs": ["logits", "classes", "class_weights", *MAP_NAMES]}


@dataclass(frozen=True)
class LayerShape:
    channels: int
    height: int
    width: int


def weights_sha256(model: nn.Module) -> str:
    """A digest of every parameter and buffer (names, dtypes, shapes, values): the numbers a
    graph bakes in, whichever file they were loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # Raw bytes via a flat uint8 view (numpy has no bfloat16; 0-d tensors cannot be viewed).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- helpers shared by both networks -----------------------------------------------------

def masked(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(K*N, ...) class-major gradient times an (N, ...) forward mask, broadcast over K."""
    return (grad.view(-1, *mask.shape) * mask).view(grad.shape)


def class_weights_of(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of `classes` (N, K), renormalised to sum to 1 per image
    (engine/semantic/cam.py's rule, with its guard against an all-underflowed row)."""
    chosen = logits.softmax(dim=1).gather(1, classes)
    return chosen / chosen.sum(dim=1, keepdim=True).clamp_min(torch.finfo(chosen.dtype).tiny)


def grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """A (N, C, h, w) and dlogit/dA (K*N, C, h, w) -> ReLU(sum_m alpha_m A_m) (N, K, h, w),
    alpha_m the spatial mean of the gradient (Selvaraju et al.)."""
    n, c, h, w = activation.shape
    alpha = gradient.view(-1, n, c, h * w).mean(dim=3).transpose(0, 1)  # (N, K, C)
    maps = torch.matmul(alpha, activation.reshape(n, c, h * w))  # (N, K, h*w)
    return torch.relu(maps).view(n, -1, h, w)


def _batch_norm_parameters(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, bias, running mean, running variance) of an affine batch norm that tracks
    its statistics, the kind a conv can absorb."""
    if bn.weight is None or bn.bias is None or bn.running_mean is None or bn.running_var is None:
        raise ValueError("only an affine batch norm with running statistics folds into a conv")
    return bn.weight, bn.bias, bn.running_mean, bn.running_var


class FoldedConv(nn.Module):
    """A conv (+ eval-mode batch norm) as one conv with bias, for a fixed input size, with its
    transpose. Padding is TensorFlow "same" (EfficientNet) unless `symmetric` is given."""

    # buffers
    weight: torch.Tensor
    bias: torch.Tensor
    flipped: torch.Tensor

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, size: tuple[int, int],
                 symmetric: int | None = None):
        super().__init__()
        weight = conv.weight.detach().to(torch.float64)
        bias = torch.zeros(weight.shape[0], dtype=torch.float64)
        if conv.bias is not None:
            bias = conv.bias.detach().to(torch.float64)
        if bn is not None:
            gamma, beta, mean, variance = _batch_norm_parameters(bn)
            # Folded in float64 so the fold itself adds no rounding beyond the final cast.
            scale = gamma.double() / torch.sqrt(variance.double() + bn.eps)
            weight = weight * scale[:, None, None, None]
            bias = (bias - mean.double()) * scale + beta.double()
        self.kernel, self.stride, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
            raise ValueError("only square kernels and strides are supported")
        if self.groups not in (1, weight.shape[0]) or (self.groups > 1 and weight.shape[1] != 1):
            raise ValueError("only dense and depthwise convolutions have a transpose here")
        self.in_size = size
        if symmetric is not None:
            top = bottom = left = right = symmetric
        else:
            top, bottom = same_padding(size[0], self.kernel, self.stride)
            left, right = same_padding(size[1], self.kernel, self.stride)
        self.pads = (top, bottom, left, right)
        self.out_size = ((size[0] + top + bottom - self.kernel) // self.stride + 1,
                         (size[1] + left + right - self.kernel) // self.stride + 1)
        dtype = conv.weight.dtype  # float32 for an engine; float64 to check the algebra
        self.register_buffer("weight", weight.to(dtype))
        self.register_buffer("bias", bias.to(dtype))
        # The transpose's weights, made once here so the exported graph holds them as
        # constants: a dense conv swaps in/out channels, a depthwise one is its own "swap".
        swapped = weight if self.groups > 1 else weight.transpose(0, 1)
        self.register_buffer("flipped", swapped.flip(2, 3).contiguous().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads
        if x.dtype == torch.float64:
            # Only the float64 algebra checks come here: torch's CPU grouped conv with a bias
            # loops over the groups in float64 (~100x slower), so the bias is added apart.
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride, 0, 1, self.groups)
            return y + self.bias.view(1, -1, 1, 1)
        if top == bottom == left == right:  # one ONNX Conv node, its own padding
            return F.conv2d(x, self.weight, self.bias, self.stride, top, 1, self.groups)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride, 0, 1, self.groups)

    def transpose(self, grad: torch.Tensor) -> torch.Tensor:
        """d/d input from d/d output (K*N, C_out, h, w), the bias playing no part."""
        top, bottom, left, right = self.pads
        groups = self.groups if self.groups > 1 else 1
        if self.stride == 1 and top == bottom == left == right:
            # A stride-1 transposed conv is a conv with the kernel flipped: engines run
            # Conv faster than ConvTranspose.
            return F.conv2d(grad, self.flipped, None, 1, top, 1, groups)
        # Scatter every output gradient back over its kxk window on the padded input, then
        # drop what fell on the padding. The padded input may have had rows past the last
        # window (the forward's floor division skipped them): their gradient is zero.
        full = F.conv_transpose2d(grad, self.weight, None, self.stride, 0, 0, groups)
        height, width = self.in_size
        short_h = max(top + height - full.shape[2], 0)
        short_w = max(left + width - full.shape[3], 0)
        if short_h or short_w:
            full = F.pad(full, (0, short_w, 0, short_h))
        return full[:, :, top:top + height, left:left + width]


# --- EfficientNet-Lite0 -------------------------------------------------------------------

class _FoldedBlock(nn.Module):
    """An MBConvBlock with its batch norms folded, recording what its transpose needs."""

    def __init__(self, block: MBConvBlock, size: tuple[int, int]):
        super().__init__()
        self.expand = FoldedConv(block._expand_conv, block._bn0, size) if block.has_expansion else None
        self.depthwise = FoldedConv(block._depthwise_conv, block._bn1, size)
        self.project = FoldedConv(block._project_conv, block._bn2, self.depthwise.out_size)
        self.has_skip = block.has_skip
        self.out_size = self.depthwise.out_size

    def forward(self, x: torch.Tensor, tape: list | None = None) -> torch.Tensor:
        inputs = x
        expand_mask = None
        if self.expand is not None:
            z = self.expand(x)
            expand_mask = (z > 0) & (z < 6)
            x = z.clamp(0.0, 6.0)
        z = self.depthwise(x)
        depthwise_mask = (z > 0) & (z < 6)
        x = self.project(z.clamp(0.0, 6.0))
        if tape is not None:
            # ReLU6's derivative is 1 strictly inside (0, 6), as torch's hardtanh backward.
            tape.append((expand_mask, depthwise_mask))
        return x + inputs if self.has_skip else x

    def transpose(self, grad: torch.Tensor, saved) -> torch.Tensor:
        expand_mask, depthwise_mask = saved
        g = self.project.transpose(grad)
        g = self.depthwise.transpose(masked(g, depthwise_mask.to(g.dtype)))
        if self.expand is not None:
            g = self.expand.transpose(masked(g, expand_mask.to(g.dtype)))
        return g + grad if self.has_skip else g


class CamGraph(nn.Module, ABC):
    """Common front (pixel scaling) and back (class choice, maps) of the CAM graphs."""

    layer_shapes: tuple[LayerShape, ...]
    offset: torch.Tensor  # buffers
    scale: torch.Tensor

    def __init__(self, normalisation: Normalisation, input_size: int, top_k: int | None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if top_k is not None and not 1 <= top_k <= 1000:
            raise SemfuseError(f"classes must be 1..1000, got {top_k}")
        self.top_k = top_k
        self.input_size = input_size
        offset, scale = normalisation.tensors(dtype)
        self.order = list(normalisation.order)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def network_input(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels[:, self.order] - self.offset) / self.scale

    @abstractmethod
    def run(self, pixels: torch.Tensor):
        """-> (logits, CAM-layer activations, tape for `gradients`)."""

    @abstractmethod
    def gradients(self, tape, classes: torch.Tensor) -> list[torch.Tensor]:
        """d logit_c / dA at each CAM layer, (K*N, C, h, w) class-major, shallow to deep."""

    def forward(self, image: torch.Tensor, classes: torch.Tensor | None = None):
        logits, activations, tape = self.run(image)
        if self.top_k is not None:
            classes = logits.topk(self.top_k, dim=1).indices  # softmax keeps the order
        elif classes is None:
            raise ValueError("a CAM graph without top_k takes the classes as an input")
        weights = class_weights_of(logits, classes)
        maps = [grad_cam(a, g) for a, g in zip(activations, self.gradients(tape, classes))]
        if self.top_k is not None:
            return (logits, classes, weights, *maps)
        return (logits, weights, *maps)


def _efficientnet_cam_blocks() -> tuple[int, int]:
    """The two block indices of efficientnet_lite.CAM_LAYERS ("_blocks.4", "_blocks.10");
    the third layer must be the activated head, whose gradient the FC gives directly."""
    *blocks, head = EFFICIENTNET_CAM_LAYERS
    if head != "_head_act" or len(blocks) != 2 or not all(b.startswith("_blocks.") for b in blocks):
        raise ValueError(f"the CAM graph cannot tap {EFFICIENTNET_CAM_LAYERS}")
    shallow, deep = (int(b.split(".")[1]) for b in blocks)
    return shallow, deep


class EfficientNetCamGraph(CamGraph):
    """EfficientNet-Lite0 at efficientnet_lite.CAM_LAYERS: blocks 4 and 10 and the head."""

    CAM_BLOCKS = _efficientnet_cam_blocks()
    FIRST_TAPED_BLOCK = CAM_BLOCKS[0] + 1  # blocks below the shallowest CAM layer need no backward
    fc_weight: torch.Tensor  # buffers
    fc_bias: torch.Tensor

    def __init__(self, network: EfficientNetLite, normalisation: Normalisation, input_size: int,
                 top_k: int | None = None):
        super().__init__(normalisation, input_size, top_k, network._fc.weight.dtype)
        network = network.eval()
        size = (input_size, input_size)
        self.stem = FoldedConv(network._conv_stem, network._bn0, size)
        size = self.stem.out_size
        blocks = []
        for block in network.block_list:
            blocks.append(_FoldedBlock(block, size))
            size = blocks[-1].out_size
        self.blocks = nn.ModuleList(blocks)
        self.head = FoldedConv(network._conv_head, network._bn1, size)
        self.register_buffer("fc_weight", network._fc.weight.detach().clone())
        self.register_buffer("fc_bias", network._fc.bias.detach().clone())
        shapes = []
        for index in self.CAM_BLOCKS:
            conv = blocks[index].project
            shapes.append(LayerShape(conv.weight.shape[0], *conv.out_size))
        shapes.append(LayerShape(self.head.weight.shape[0], *self.head.out_size))
        self.layer_shapes = tuple(shapes)

    def run(self, pixels):
        x = F.relu6(self.stem(self.network_input(pixels)))
        tape: list = []
        activations = []
        for index, block in enumerate(self.blocks):
            x = block(x, tape if index >= self.FIRST_TAPED_BLOCK else None)
            if index in self.CAM_BLOCKS:
                activations.append(x)
        z = self.head(x)
        head_mask = (z > 0) & (z < 6)
        features = z.clamp(0.0, 6.0)
        activations.append(features)
        logits = F.linear(features.mean(dim=(2, 3)), self.fc_weight, self.fc_bias)
        return logits, activations, (tape, head_mask)

    def gradients(self, tape, classes):
        blocks_tape, head_mask = tape
        shape = self.layer_shapes[2]
        # d logit_c / d pooled = row c of the FC weights; the average pool spreads it evenly.
        seed = self.fc_weight[classes.t()]  # (K, N, 1280)
        g = (seed / (shape.height * shape.width)).reshape(-1, shape.channels, 1, 1)
        g_head = g.expand(-1, -1, shape.height, shape.width)
        g = self.head.transpose(masked(g_head, head_mask.to(g.dtype)))
        deeper = None
        for index in range(len(self.blocks) - 1, self.FIRST_TAPED_BLOCK - 1, -1):
            if index == self.CAM_BLOCKS[1]:
                deeper = g  # d/d(output of the deeper CAM block)
            g = self.blocks[index].transpose(g, blocks_tape[index - self.FIRST_TAPED_BLOCK])
        return [g, deeper, g_head]


# --- VGG19 with its head ------------------------------------------------------------------

def adaptive_pool_matrix(size: int, out: int) -> torch.Tensor:
    """(out, size) matrix of torch's adaptive average pooling along one axis."""
    matrix = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def max_pool_with_selectors(x: torch.Tensor):
    """2x2 stride-2 max-pool (odd last rows/columns dropped, as F.max_pool2d) and, for each of
    the four window positions (0,0), (0,1), (1,0), (1,1), where it holds the window's first
    maximum in that order: torch's CPU max_pool2d keeps the first maximum it meets, which
    decides where the gradient of a tie goes (after a ReLU most windows are all-zero ties).

    Equality masks instead of MaxPool's Indices output and a scatter: TensorRT's ONNX parser
    takes neither Indices nor (everywhere) ScatterElements, and these are elementwise ops."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    a, b = x[:, :, 0:h:2, 0:w:2], x[:, :, 0:h:2, 1:w:2]
    c, d = x[:, :, 1:h:2, 0:w:2], x[:, :, 1:h:2, 1:w:2]
    pooled = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
    first_a = a == pooled
    first_b = (b == pooled) & ~first_a
    taken = first_a | first_b
    first_c = (c == pooled) & ~taken
    first_d = ~(taken | first_c)
    return pooled, (first_a, first_b, first_c, first_d)


def max_pool_transpose(grad: torch.Tensor, selectors, shape) -> torch.Tensor:
    """(K*N, C, h, w) gradient of the pooled map -> (K*N, C, H, W) of its input."""
    _, channels, height, width = shape
    a, b, c, d = (masked(grad, s.to(grad.dtype)) for s in selectors)
    h, w = grad.shape[-2], grad.shape[-1]
    top = torch.stack([a, b], dim=-1).reshape(-1, channels, h, 2 * w)  # even rows: a b a b ...
    bottom = torch.stack([c, d], dim=-1).reshape(-1, channels, h, 2 * w)
    full = torch.stack([top, bottom], dim=-2).reshape(-1, channels, 2 * h, 2 * w)
    if (2 * h, 2 * w) != (height, width):  # the rows/columns the pool never read
        full = F.pad(full, (0, width - 2 * w, 0, height - 2 * h))
    return full


class VGG19CamGraph(CamGraph):
    """VGG19 with its ImageNet head at relu3_4, relu4_4 and relu5_4."""

    CAM_TAPS = ("relu3_4", "relu4_4", "relu5_4")

    def __init__(self, network: VGG19Classifier, normalisation: Normalisation, input_size: int,
                 top_k: int | None = None):
        trunk = network.trunk.conv_layers
        dtype = trunk[0].weight.dtype
        super().__init__(normalisation, input_size, top_k, dtype)
        network = network.eval()
        self.plan = [(name, kind) for name, kind, _ in network.trunk.plan]
        first = next(i for i, (name, _) in enumerate(self.plan) if name == self.CAM_TAPS[0])
        self.first_taped = first + 1  # ops after relu3_4 are what the backward walks through
        convs, size, shapes = [], (input_size, input_size), []
        modules = iter(trunk)
        for name, kind in self.plan:
            if kind == "conv":
                convs.append(FoldedConv(next(modules), None, size, symmetric=1))
            elif kind == "pool":
                size = (size[0] // 2, size[1] // 2)
            if name in self.CAM_TAPS:
                shapes.append(LayerShape(convs[-1].weight.shape[0], *size))
        if min(size) < 1:
            raise SemfuseError(f"VGG19 needs an input of at least 32 pixels, got {input_size}")
        self.convs = nn.ModuleList(convs)
        self.layer_shapes = tuple(shapes)
        self.pool5_size = size
        # The head's adaptive pool to 7x7 is linear: P_h x P_w^T, its transpose P_h^T g P_w.
        # At 224 pixels pool5 is already 7x7 and the pool is the identity.
        self.identity_pool = size == (POOL_SIZE, POOL_SIZE)
        self.register_buffer("pool_h", adaptive_pool_matrix(size[0], POOL_SIZE).to(dtype))
        self.register_buffer("pool_w", adaptive_pool_matrix(size[1], POOL_SIZE).to(dtype))
        linears = [m for m in network.classifier if isinstance(m, nn.Linear)]
        for index, linear in enumerate(linears):
            self.register_buffer(f"w{index}", linear.weight.detach().clone())
            self.register_buffer(f"b{index}", linear.bias.detach().clone())

    def run(self, pixels):
        x = self.network_input(pixels)
        convs = iter(self.convs)
        tape, activations = [], []
        for index, (name, kind) in enumerate(self.plan):
            keep = index >= self.first_taped
            if kind == "conv":
                x = next(convs)(x)
                if keep:
                    tape.append(("conv", None))
            elif kind == "relu":
                x = torch.relu(x)
                if keep:
                    tape.append(("relu", x > 0))
            elif keep:
                before = x.shape
                x, selectors = max_pool_with_selectors(x)
                tape.append(("pool", (selectors, before)))
            else:
                x = F.max_pool2d(x, 2)
            if name in self.CAM_TAPS:
                activations.append(x)
                tape.append(("tap", None))
        if not self.identity_pool:
            x = torch.matmul(torch.matmul(self.pool_h, x), self.pool_w.t())
        hidden1 = torch.relu(F.linear(x.flatten(1), self.w0, self.b0))
        hidden2 = torch.relu(F.linear(hidden1, self.w1, self.b1))
        logits = F.linear(hidden2, self.w2, self.b2)
        # Dropout is the identity in eval mode, so the head's backward is masks and W^T.
        return logits, activations, (tape, hidden1 > 0, hidden2 > 0)

    def gradients(self, tape, classes):
        ops, mask1, mask2 = tape
        g = masked(self.w2[classes.t()].flatten(0, 1), mask2.to(self.w2.dtype))  # (K*N, hidden2)
        g = masked(torch.matmul(g, self.w1), mask1.to(g.dtype))
        g = torch.matmul(g, self.w0).view(-1, TRUNK_CHANNELS, POOL_SIZE, POOL_SIZE)
        if not self.identity_pool:
            g = torch.matmul(torch.matmul(self.pool_h.t(), g), self.pool_w)
        convs = iter(reversed(self.convs))
        found = []
        for kind, saved in reversed(ops):
            if kind == "tap":
                found.append(g)
            elif kind == "conv":
                g = next(convs).transpose(g)
            elif kind == "relu":
                g = masked(g, saved.to(g.dtype))
            else:
                selectors, shape = saved
                g = max_pool_transpose(g, selectors, shape)
        return found[::-1]


def build_cam_graph(classifier, top_k: int | None = None, input_size: int | None = None) -> CamGraph:
    """The CAM graph of a `semfuse_rt.engine.semantic.classifier.Classifier` (EfficientNet-Lite0 or
    VGG19 with head); `top_k=None` for the classes-input mode."""
    network = classifier.model.network
    normalisation = classifier.model.normalisation
    size = input_size or classifier.input_size
    graph: CamGraph
    if isinstance(network, EfficientNetLite):
        graph = EfficientNetCamGraph(network, normalisation, size, top_k)
        expected = tuple(f"network.{n}" for n in EFFICIENTNET_CAM_LAYERS)
    elif isinstance(network, VGG19Classifier):
        graph = VGG19CamGraph(network, normalisation, size, top_k)
        expected = tuple(f"network.taps.{n}" for n in VGG19CamGraph.CAM_TAPS)
    else:
        raise SemfuseError(f"no CAM graph for a {type(network).__name__} classifier")
    if tuple(classifier.cam_layers) != expected:
        # The graph hard-codes where it taps the network; a classifier with other CAM layers
        # would silently get maps of the wrong layers.
        raise SemfuseError(f"the CAM graph taps {', '.join(expected)}, the classifier asks for "
                           f"{', '.join(classifier.cam_layers)}")
    return graph.eval()
