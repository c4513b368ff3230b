"""Which figure picks the best trial of a front: its own module, free of torch and ONNX, so that
the CLI and the config can name it without importing the search (~4 s of start-up)."""

from enum import Enum


class Prefer(str, Enum):
    LATENCY = "latency"
    SIZE = "size"
    THROUGHPUT = "throughput"
