"""The labeler's old address: it now lives in unixcxr.labeler, where report cleaning (data/) and
evaluation can both import it. `unixcxr.evaluate.labeler` and its submodules stay importable."""

import sys

from unixcxr.labeler import clauses, clean_report, label_report, label_reports, labeler, negation, rules, scanner

for _module in (clauses, labeler, negation, rules, scanner):
    sys.modules[f"{__name__}.{_module.__name__.rpartition('.')[2]}"] = _module

__all__ = ["clean_report", "label_report", "label_reports"]
