"""Reports from run directories: ``fgvlm report`` (one self-contained HTML page), results tables, lmms-eval export.

``rundirs`` reads run and study directories (tolerating missing or malformed files), ``tables`` builds one results
row per run (``collect_rows``, ``write_results_table``), ``stats`` the paired comparisons, ``figures`` the
matplotlib plots, ``images`` the thumbnails, ``html`` the page, and ``export`` the lm-evaluation-harness format.
Nothing here loads a model.
"""

from fgvlm.report.rundirs import ReportError, RunInfo, load_run, load_runs
from fgvlm.report.tables import ResultRow, collect_rows, write_results_table

__all__ = ["ReportError", "ResultRow", "RunInfo", "collect_rows", "load_run", "load_runs", "write_results_table"]
