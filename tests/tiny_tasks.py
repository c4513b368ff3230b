"""Tasks importable as ``--task tests.tiny_tasks:NAME`` by CLI tests that run petra in a subprocess,
and by training processes of the parallel executors."""

import multiprocessing as mp
import os
import signal
from dataclasses import replace

import torch

from petra.models.digits import DigitsResNet, digits_task


def digits_w8():
    return digits_task(width=8)


def digits_w8_short():
    """digits-w8 (the same cached teacher) with fine-tunes of at most one epoch: for the tests of
    a run's lifecycle (kill, Ctrl-C, resume), where what a candidate is does not matter."""
    return replace(digits_task(width=8), gene_choices={"epochs": (0, 1)})


class KillsInTraining(DigitsResNet):
    """The digits CNN, except that a training step in a child process kills that process with
    SIGKILL (what an out-of-memory kill of a training worker looks like). Inference anywhere,
    and training in the test process, are unaffected; its state_dict is digits-w8's, so a test
    loads the session's trained teacher instead of training another."""

    def __init__(self) -> None:
        super().__init__(8)

    def forward(self, x):
        if self.training and torch.is_grad_enabled() and mp.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


def digits_killed_in_training():
    return replace(digits_task(width=8), name="digits-w8-killed-in-training", build_model=KillsInTraining)
