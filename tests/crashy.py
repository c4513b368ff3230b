"""A real runtime that really crashes: ONNX Runtime, except that it aborts the process for one
graph-optimization setting (what a native runtime bug looks like to petra). Importable by path
from the measurement worker."""

import os

from petra.runtimes.onnxruntime import GraphOpt, OnnxRuntime


class AbortingRuntime(OnnxRuntime):
    name = "aborting-onnxruntime"

    def compile(self, model_path, *, graph_opt=GraphOpt.ALL, threads=1, spinning=False):
        if GraphOpt(graph_opt) is GraphOpt.BASIC:
            os.abort()
        return super().compile(model_path, graph_opt=graph_opt, threads=threads, spinning=spinning)
