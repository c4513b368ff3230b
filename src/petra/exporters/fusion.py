"""Transformer graph fusion: ONNX Runtime's transformer optimizer, as a pass with one gene.

``onnxruntime.transformers.optimizer`` is the successor of the 2021 ``onnxruntime-tools``
package: it rewrites exported subgraphs into ORT's fused kernels (Attention,
SkipLayerNormalization, (Bias)Gelu) where they match its patterns exactly. Generic encoders
exported by torch often match only in part (LayerNorm after a residual Add does, attention
written with separate reshapes often does not), so the probe counts what fuses on the model in
hand and the pass stays out of the search where nothing would.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

from petra.errors import ExportError
from petra.exporters.artifact import Artifact
from petra.exporters.onnx_export import export_onnx
from petra.genes import Gene, Pass, Stage

#: the fused operator kinds worth a gene: each replaces a subgraph with one ORT kernel
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
             "Gelu", "BiasGelu", "FastGelu")


def fuse(src: Path, dst: Path) -> dict[str, int]:
    """Write the fused model to ``dst``; returns how many nodes of each fused kind it holds."""
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
        stats = {k: v for k, v in model.get_fused_operator_statistics().items() if k in FUSED_OPS and v}
        tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
        model.save_model_to_file(str(tmp))
        os.replace(tmp, dst)
    except Exception as exc:
        raise ExportError(f"transformer fusion failed: {type(exc).__name__}: {exc}") from exc
    return stats


def _ort_only(c) -> bool:
    """The fused kernels are ONNX Runtime contrib ops: only its own quantizer's backend runs them."""
    from petra.exporters.quantize import OrtQuantization

    return c.backend.quantizer == OrtQuantization.name


class TransformerFusion(Pass):
    name = "transformer_fusion"
    genes = (
        Gene("transformer_fusion", (False, True), False, Stage.ARTIFACT, when=_ort_only,
             keyed_at_default=False, help="fuse attention / LayerNorm / Gelu subgraphs (ORT)"),
    )

    def applies(self, model, example, backend) -> str | None:
        with tempfile.TemporaryDirectory(prefix="petra-fuse-") as tmp:
            src = export_onnx(model, example, Path(tmp) / "model.onnx").path
            try:
                stats = fuse(src, Path(tmp) / "fused.onnx")
            except ExportError as exc:
                return str(exc)
        return None if stats else "ORT's transformer optimizer fuses nothing in this model"

    def rewrite(self, src: Artifact, folder: Path, c) -> Artifact:
        """The FP32 file the quantizer starts from, fused; the counts go beside it."""
        if not c.transformer_fusion:
            return src
        dst = folder / "fused.onnx"
        folder.mkdir(parents=True, exist_ok=True)
        stats = fuse(src.path, dst)
        (folder / "fusion.txt").write_text(", ".join(f"{k} {v}" for k, v in sorted(stats.items())) or "none")
        return Artifact.of(dst)
