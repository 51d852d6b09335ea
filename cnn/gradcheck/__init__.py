"""The public gradient audit: :func:`gradcheck` (``cnn.gradcheck``) and its report.

``python -m cnn.gradcheck --model NAME`` audits a zoo model from the command line.
"""

from ._audit import gradcheck
from ._report import GradcheckReport, GradcheckRow

__all__ = ["gradcheck", "GradcheckReport", "GradcheckRow"]
