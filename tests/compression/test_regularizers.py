"""The teacher's outputs kept per training example across fine-tunes."""

from __future__ import annotations

import torch
from torch import nn

from petra.compression.regularizers import TeacherOutputs


class Counting(nn.Module):
    """The tiny teacher, counting the rows its forward pass sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


def test_each_row_runs_through_the_teacher_once_and_outputs_match(tiny_task, tiny_teacher):
    teacher = Counting(tiny_teacher)
    outputs = TeacherOutputs(teacher)
    x = torch.from_numpy(tiny_task.train.x[:48])
    with torch.no_grad():
        direct = tiny_teacher(x)
    first = outputs(x[:32])
    assert teacher.rows == 32
    mixed = outputs(x[16:48])  # half known, half new: only the new half runs
    assert teacher.rows == 48
    again = outputs(x[torch.tensor([47, 3, 20])])
    assert teacher.rows == 48
    torch.testing.assert_close(first, direct[:32], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed, direct[16:48], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, direct[[47, 3, 20]], atol=1e-5, rtol=1e-5)


def test_past_the_cap_rows_are_computed_but_not_kept(tiny_task, tiny_teacher):
    teacher = Counting(tiny_teacher)
    outputs = TeacherOutputs(teacher)
    outputs.MAX_FLOATS = 10 * 10  # ten rows of ten class scores
    x = torch.from_numpy(tiny_task.train.x[:16])
    outputs(x)
    assert len(outputs.memo) == 10 and outputs.stored == 100
    outputs(x)
    assert teacher.rows == 16 + 6
