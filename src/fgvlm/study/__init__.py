"""Studies: a whole table of runs from one YAML file, resumable, on one machine or a SLURM cluster.

``load_study`` parses, checks and resolves a study file; ``plan_study`` decides per run (skip / resume / run /
refuse); ``execute`` runs the pending ones as subprocesses, up to ``jobs`` at once, shown live by
``fgvlm.study.display``; ``collect_rows`` / ``write_results_table`` write the results table; ``submit_jobs`` turns
the pending runs into chained SLURM jobs. The CLI is ``fgvlm study``.
"""

from fgvlm.study.plan import Step, plan_study
from fgvlm.study.resolve import ResolvedRun, Study, load_study
from fgvlm.study.runner import Outcome, execute

__all__ = ["Outcome", "ResolvedRun", "Step", "Study", "execute", "load_study", "plan_study"]
