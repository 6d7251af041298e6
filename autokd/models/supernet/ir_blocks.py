"""The layers of an ``mbv2`` student as the DARTS cost model counts them (MobileNetV2 / V3).

Why a copy of the family's layers here: the supernet's expected cost is a sum of exact
per-candidate costs, each counted by ``autokd.cost`` on the discrete layers the candidate stands
for, so these builders follow the agreed ``mbv2`` block definition line by line (the tests check
the sum against the whole student the ``mbv2`` family builds). They also register the op kinds
``ir_stem``, ``ir_block`` and ``ir_head`` the latency table times.

Block (Sandler et al. 2018, MobileNetV2; SE and hard-swish from Howard et al. 2019, MobileNetV3):
``[1x1 expand -> BN -> act] -> kxk depthwise (stride s) -> BN -> act -> [SE] -> 1x1 project -> BN``,
plus the input when ``s == 1`` and the channels match.

Shapes: ``B`` batch, ``C`` channels, ``S`` spatial dims (``H, W`` or ``L``).
"""

from __future__ import annotations

from torch import Tensor, nn

from autokd.models import blocks
from autokd.models.supernet.ops import OP_KINDS, OpKind, OpSpec

__all__ = [
    "InvertedResidual",
    "SqueezeExcite",
    "block_stride",
    "head_layers",
    "make_divisible",
    "stem_layers",
    "stem_stride",
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor``, never below it or 10 % under ``value`` (MobileNet)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def conv_bn_act(dim: int, c_in: int, c_out: int, kernel: int, stride: int, activation: str | None,
                groups: int = 1) -> nn.Sequential:
    """conv (no bias: BN follows) -> BN -> [act]."""
    cls = nn.Conv1d if dim == 1 else nn.Conv2d
    layers: list[nn.Module] = [cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                                   groups=groups, bias=False), blocks.batch_norm(dim, c_out)]
    if activation is not None:
        layers.append(blocks.make_activation(activation))
    return nn.Sequential(*layers)


def stem_stride(input_shape: tuple[int, ...]) -> int:
    """The stem down-samples only inputs whose smallest side is at least 64."""
    return 2 if min(input_shape[1:]) >= 64 else 1


def block_stride(side: int, first: bool) -> int:
    """A stage's first block halves maps at least 8 wide (maps never shrink below 4)."""
    return 2 if first and side >= 8 else 1


class SqueezeExcite(nn.Module):
    """MobileNetV3's SE: pool -> 1x1 squeeze -> ReLU -> 1x1 expand -> hard-sigmoid gate."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        cls = nn.Conv1d if dim == 1 else nn.Conv2d
        squeeze = make_divisible(channels / 4, 8)
        self.pool = blocks.global_pool(dim)
        self.reduce = cls(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.expand = cls(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, *S)
        s = self.pool(x)  # (B, C, 1, ...)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    """One MobileNetV2 block with the agreed options (expansion, kernel, stride, SE, act)."""

    def __init__(self, dim: int, c_in: int, c_out: int, expansion: int, kernel: int,
                 stride: int, se: bool, activation: str) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.expand = conv_bn_act(dim, c_in, hidden, 1, 1, activation) if expansion != 1 \
            else nn.Identity()
        self.depthwise = conv_bn_act(dim, hidden, hidden, kernel, stride, activation,
                                     groups=hidden)
        self.se = SqueezeExcite(dim, hidden) if se else nn.Identity()
        self.project = conv_bn_act(dim, hidden, c_out, 1, 1, None)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, *S) -> (B, C_out, *S')
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


def stem_layers(dim: int, c_in: int, width: int, stride: int, activation: str) -> nn.Sequential:
    """conv k3 -> BN -> the first stage's activation."""
    return conv_bn_act(dim, c_in, width, 3, stride, activation)


def head_layers(dim: int, c_in: int, head_width: int, activation: str,
                num_classes: int) -> nn.Sequential:
    """[1x1 conv -> BN -> act] -> global pool -> flatten -> dropout -> linear."""
    layers: list[nn.Module] = []
    if head_width:
        layers.append(conv_bn_act(dim, c_in, head_width, 1, 1, activation))
        c_in = head_width
    layers += [blocks.global_pool(dim), nn.Flatten(1), nn.Dropout(0.0),
               nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def _build_block(op: OpSpec) -> nn.Module:
    return InvertedResidual(op.dim, op.in_shape[0], op.out, int(op.param("expansion", 1)),
                            op.kernel, op.stride, bool(op.param("se", False)), op.activation)


def _block_key(op: OpSpec) -> str:
    return (f"ir{op.dim}d:{op.shape_text}>{op.out}:k{op.kernel}s{op.stride}"
            f"e{op.param('expansion', 1)}:se{int(bool(op.param('se', False)))}:{op.activation}")


OP_KINDS.register("ir_stem", OpKind(
    lambda op: stem_layers(op.dim, op.in_shape[0], op.out, op.stride, op.activation),
    lambda op: f"irstem{op.dim}d:{op.shape_text}>{op.out}:s{op.stride}:{op.activation}"))
OP_KINDS.register("ir_block", OpKind(_build_block, _block_key))
OP_KINDS.register("ir_head", OpKind(
    lambda op: head_layers(op.dim, op.in_shape[0], int(op.param("head_width", 0)),
                           op.activation, op.out),
    lambda op: (f"irhead{op.dim}d:{op.shape_text}>{op.param('head_width', 0)}>{op.out}"
                f":{op.activation}")))

