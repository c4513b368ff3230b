"""Tasks importable as ``--task tests.tiny_tasks:NAME`` by CLI tests that run petra in a subprocess."""

from petra.models.digits import digits_task


def digits_w8():
    return digits_task(width=8)
