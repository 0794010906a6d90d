"""What a person reads after a run: ``report.md``, its PNG figures, short summaries.

* :func:`write_report` -- ``report.md`` plus figures (each only when its input is present).
* :func:`report_summary` -- a few lines for the CLI and a Prefect markdown artifact.
* :func:`top_bottom_points` -- the most and least valuable points as plain dicts.
* :func:`inline_figures` -- the report's figure links as inline images (for viewers
  without the run folder, such as the Prefect UI).
"""

from .markdown import (harmful_points, inline_figures, markdown_table, report_summary, top_bottom_points,
                       write_report)

__all__ = ["harmful_points", "inline_figures", "markdown_table", "report_summary", "top_bottom_points",
           "write_report"]
