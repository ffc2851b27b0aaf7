"""The HTML report of an evaluation (``ovdiv report RESULTS_DIR``, ``ovdiv evaluate --report``)."""

from ovdiv.report.html import SECTIONS, render_report, write_report

__all__ = ["SECTIONS", "render_report", "write_report"]
