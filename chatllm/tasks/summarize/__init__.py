"""Summaries of any length: one pass when the text fits the window, else map-reduce sized to it, with the document's
names kept (names/) and checked before a sentence reaches the user (summary_guard).

Offers summarize() and Summarizer (streamed sentence by sentence), SummaryOptions, SummaryResult and Progress.
"""

from chatllm.tasks.summarize.summarizer import Summarizer, summarize
from chatllm.tasks.summarize.summary_prompts import LENGTHS, STYLES, Progress, SummaryOptions, SummaryResult

__all__ = ["LENGTHS", "STYLES", "Progress", "Summarizer", "SummaryOptions", "SummaryResult", "summarize"]
