"""Run reports: a self-contained HTML file and the terminal summary."""

from petra.report.html import render, write_report

__all__ = ["render", "write_report"]
