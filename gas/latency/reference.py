"""The reference network every latency timing is taken beside, so that timings outlast the machine's drift.

A machine's speed drifts: clock boost, other jobs, thermal limits. On the shared 2-core development machine,
a build's calibration networks measured again after the test ran 1.03x and 1.17x their build-time figures
(experiments/results/bench_latency.md), and a latency model kept in seconds carries that drift into every
prediction. A network timed in turns with a fixed
reference feels the same drift as the reference, so the ratio of the two medians stays put while both
move. The latency model keeps every figure as that ratio (reference units) and turns a prediction into
seconds with the reference's latest measurement (HELP, Lee et al. 2021, describes a device by the
latencies of reference networks in the same way).

The reference is fixed: one network for every space, built from a seed, so its time on a device is a
property of the device and the settings alone. It runs what both spaces run (convolutions, BatchNorm,
Hardswish, LayerNorm, fused attention, GELU MLPs) at a size that takes milliseconds on one CPU thread, so
its median over a measurement's runs is steady. `REFERENCE_NAME` names this network: a change to it takes
a new name, and a latency model kept in another reference's units is rebuilt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_NAME = "reference-1"
#: One example's input: the reference always runs at 64px, whatever resolution the timed network has.
REFERENCE_SHAPE = (3, 64, 64)
_DIM, _HEADS, _DEPTH, _CLASSES, _SEED = 64, 2, 2, 10, 0


class _Block(nn.Module):
    """A pre-norm transformer block: fused self-attention, then a GELU MLP four times as wide."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(_DIM)
        self.qkv = nn.Linear(_DIM, 3 * _DIM)
        self.projection = nn.Linear(_DIM, _DIM)
        self.mlp_norm = nn.LayerNorm(_DIM)
        self.expand = nn.Linear(_DIM, 4 * _DIM)
        self.contract = nn.Linear(4 * _DIM, _DIM)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, _ = tokens.shape
        qkv = self.qkv(self.attention_norm(tokens)).reshape(batch, count, 3, _HEADS, _DIM // _HEADS)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(batch, count, _DIM)
        tokens = tokens + self.projection(attended)
        return tokens + self.contract(F.gelu(self.expand(self.mlp_norm(tokens))))


class ReferenceNetwork(nn.Module):
    """A convolutional stem to 16x16 tokens of width 64, two transformer blocks, a pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(REFERENCE_SHAPE[0], _DIM // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(_DIM // 2),
            nn.Hardswish(),
            nn.Conv2d(_DIM // 2, _DIM, 3, stride=2, padding=1),
        )
        self.blocks = nn.Sequential(*(_Block() for _ in range(_DEPTH)))
        self.norm = nn.LayerNorm(_DIM)
        self.head = nn.Linear(_DIM, _CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(images).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def reference_network() -> ReferenceNetwork:
    """The reference network, in eval mode, with the same weights on every call and every machine.

    Weights change no kernel's work, but a seed keeps the reference one fixed thing (and keeps subnormal
    numbers, which some CPUs compute slowly, equally rare in every build of it). The global random state is
    left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return ReferenceNetwork().eval()
