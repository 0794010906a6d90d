"""What a person reads after a run: ``report.md``, its PNG figures, short summaries.

* :func:`write_report` -- ``report.md`` plus figures (each only when its input is present).
* :func:`report_summary` -- a few lines for the CLI and a Prefect markdown artifact.
* :func:`top_bottom_points` -- the most and least valuable points as plain dicts
  (for a Prefect table artifact).
"""

from .markdown import harmful_points, markdown_table, report_summary, top_bottom_points, write_report

__all__ = ["harmful_points", "markdown_table", "report_summary", "top_bottom_points", "write_report"]
