"""Architecture gene: long convolution kernels cut to their central taps.

Why: channel pruning shrinks a convolution by its channels, never by its kernel, and in 1-D
CNNs for time series most of the work is in long kernels. InceptionTime's modules run kernels of
39, 19 and 9 taps side by side (67 taps per output channel, against 1 for the bottleneck), and
on ucr-OSULeaf the INT8 model pruned 60% still ran 0.23x FP32 at 4.5 points of validation drop:
pruning alone cannot both keep the accuracy and reach the work a shorter kernel removes. Keeping
the middle ``keep`` of each long kernel removes that share of its multiply-adds at full width,
and the stack of layers still sees a long context; distillation retrains what the outer taps
added.

A convolution is cut only where that leaves every shape as it was: zero "same" padding
(``2 * padding == dilation * (kernel - 1)``, odd kernels), so the output length does not depend
on the kernel, whatever the stride. A spatial dimension is cut only where its kernel has at
least ``MIN_KERNEL`` taps, and never below 3: a 3x3 ResNet is left alone.
"""

from __future__ import annotations

from torch import nn

from petra.compression.probe import try_on_copy
from petra.genes import Gene, Pass, Stage

#: the shortest kernel that is cut, and the shortest a cut leaves
MIN_KERNEL, MIN_KEPT = 5, 3
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _same_padded(conv: nn.Module) -> bool:
    if not isinstance(conv, _CONVS) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    return all(k % 2 == 1 and 2 * p == d * (k - 1)
               for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))


def kept_taps(k: int, keep: float) -> int:
    """The odd number of central taps a kernel of ``k`` keeps at ``keep`` (``k`` itself when it
    is shorter than MIN_KERNEL)."""
    if k < MIN_KERNEL or keep >= 1.0:
        return k
    n = max(MIN_KEPT, int(round(k * keep)))
    return min(k, n if n % 2 == 1 else n + 1)


def cuttable(model: nn.Module) -> list[str]:
    """Names of the convolutions ``crop_kernels`` would shorten at any ``keep`` below 1."""
    return [n for n, m in model.named_modules()
            if _same_padded(m) and any(kept_taps(k, 0.0) < k for k in m.kernel_size)]


def crop_kernels(model: nn.Module, keep: float) -> list[str]:
    """Cut every cuttable convolution's kernel to its central ``keep`` share, in place; returns the
    names of those it changed. The padding shrinks with the kernel, so shapes stay as they were."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"kernel keep must be in (0, 1], got {keep}")
    changed = []
    for name in cuttable(model):
        conv = model.get_submodule(name)
        sizes = tuple(kept_taps(k, keep) for k in conv.kernel_size)
        if sizes == tuple(conv.kernel_size):
            continue
        index = [slice(None), slice(None)] + [slice((k - n) // 2, (k - n) // 2 + n)
                                              for k, n in zip(conv.kernel_size, sizes)]
        conv.weight = nn.Parameter(conv.weight.detach()[tuple(index)].clone())
        conv.kernel_size = sizes
        conv.padding = tuple(d * (n - 1) // 2 for n, d in zip(sizes, conv.dilation))
        changed.append(name)
    return changed


class KernelCrop(Pass):
    """Long convolution kernels cut to their central taps (see the module docstring)."""

    name = "kernel_crop"
    genes = (
        Gene("kernel_keep", (1.0, 0.5, 0.25), 1.0, Stage.TORCH, keyed_at_default=False,
             valid=lambda r: 0.0 < r <= 1.0, rule="must be in (0, 1] (1 = off)",
             help="share of each long (5+ tap, same-padded) convolution kernel kept, centred"),
    )

    def applies(self, model, example, backend) -> str | None:
        if not cuttable(model):
            return f"no same-padded convolution with a kernel of {MIN_KERNEL} or more taps"
        return try_on_copy(model, example, lambda m: crop_kernels(m, 0.5) and m,
                           what="kernel cropping", must_shrink=True)
