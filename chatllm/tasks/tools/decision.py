"""Whether a reply should be a tool call: the model's own inclination, calibrated against a request with no content.

Small models call a tool for almost anything once tools are offered (Qwen2.5-Coder-0.5B answers "what is the slope
of a line" with a call to `find_critical_points`), and once they start a call they make one where a request asks
for several. The decision is taken apart from the writing: the probability that the reply's first token opens a
call (`<tool_call>`, a markdown fence, a JSON object...) is compared with the same probability for a content-free
request ("N/A") under the same tools, as contextual calibration does for labels (Zhao et al., 2021). A request that
makes a call more likely than nothing does gets a call, held to the tools' grammar from its first token; one that
does not gets a plain answer. On BFCL's tuning rows this keeps a call where one is right and answers where none
fits far more often than the model's own first token does (bench/eval_tools.py, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Sequence, cast

from chatllm.engines.chat_formats.tool_calls import ToolSpec
from chatllm.engines.contract import Engine, LabelScorer

# What a call's first token can be, in every family's syntax and in what small models write instead.
CALL_STARTS = ("<tool_call>", "```", "{", "[", "[TOOL_CALLS]", "<|python_tag|>")
THRESHOLD = 0.0  # calibrated log-odds above which the reply is a call
CONTENT_FREE = "N/A"


class CallDecision:
    """Decides, turn by turn, whether a reply is a call; the content-free baseline is computed once per tool set."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._baselines: dict[tuple, float] = {}

    def decide(self, messages: Sequence[dict], tools: Sequence[ToolSpec], think: bool | str | None = None) -> bool | None:
        """True: a call; False: an answer; None: the engine cannot tell (no label scoring, or its server renders
        the prompt and parses the calls), or the turn is not a user's request (after tool results the model decides
        itself whether to call again)."""
        if (not tools or not isinstance(self.engine, LabelScorer) or getattr(self.engine, "templated_by_server", False)
                or not messages or messages[-1].get("role") != "user"):
            return None
        score = self._log_odds(messages, tools, think)
        head = [m for m in messages[:-1] if m.get("role") == "system"][:1]
        key = (tuple(t.name for t in tools), tuple(m.get("content", "") for m in head))
        if key not in self._baselines:
            self._baselines[key] = self._log_odds(head + [{"role": "user", "content": CONTENT_FREE}], tools, think)
        return score - self._baselines[key] > THRESHOLD

    def _log_odds(self, messages: Sequence[dict], tools: Sequence[ToolSpec], think: bool | str | None) -> float:
        engine = self.engine
        prompt = engine.render_chat(list(messages), tools=list(tools), think=think)
        starts: list[list[int]] = []
        for text in CALL_STARTS:
            first = engine.tokenize(text, special=True)[:1]
            if first and first not in starts:
                starts.append(first)
        logps = cast(LabelScorer, engine).score_continuations(engine.prompt_tokens(prompt), starts)
        top = max(logps)
        p = min(math.exp(top) * sum(math.exp(lp - top) for lp in logps), 1 - 1e-9)
        return math.log(p) - math.log1p(-p)
