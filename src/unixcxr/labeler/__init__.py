"""Offline rule-based CheXpert-style report labeler (see labeler.py for the pipeline).

    from unixcxr.labeler import label_report
    label_report("No pneumothorax, but a small left effusion.")
    # {'Pneumothorax': 0, 'Pleural Effusion': 1, 'No Finding': None, ...}
"""

from .labeler import clean_report, label_report, label_reports

__all__ = ["clean_report", "label_report", "label_reports"]
