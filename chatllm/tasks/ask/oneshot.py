"""One prompt in, one streamed answer out: `ask` through the chat template, `generate` as raw continuation.

A reasoning model's trace goes to `on_reasoning`, never into the answer's text; tool calls (when tools are offered)
are collected as calls, never printed as prose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from chatllm.engines.chat_formats.tool_calls import ToolSpec, tools_to_json
from chatllm.engines.contract import Engine, GenerationStats, Reasoning, Text, ToolCall
from chatllm.settings import Sampling
from chatllm.tasks.ask.structured_output import JsonSpec, decode
from chatllm.tasks.tools.decision import CallDecision
from chatllm.tasks.tools.loop import LoopEvent, LoopStats, StepStarted, ToolSession


@dataclass
class Answer:
    """What one generation produced, and how."""

    model: str
    text: str
    stats: GenerationStats
    data: Any = None  # the validated JSON value when the answer was asked for under a schema
    structured: bool = False
    reasoning: str = ""  # a reasoning model's trace, kept apart from the answer
    tool_calls: list[ToolCall] = field(default_factory=list)
    tools_offered: bool = False
    tool_decision: str | None = None  # "call" or "answer" when chatllm decided (tool_choice auto), else None
    tool_steps: list[dict] = field(default_factory=list)  # the calls that ran (a tool loop), with their results
    loop: LoopStats | None = None  # how the tool loop went, when one ran

    def as_dict(self) -> dict:
        """The --json record."""
        s = self.stats
        record = {
            "model": self.model,
            "text": self.text,
            **({"data": self.data} if self.structured else {}),
            **({"reasoning": self.reasoning} if self.reasoning or s.reasoning_tokens else {}),
            **({"tool_calls": [call_record(c) for c in self.tool_calls]} if self.tools_offered and self.loop is None else {}),
            **({"tool_calls": ran_calls(self.tool_steps), "tool_loop": self.loop.as_dict()} if self.loop is not None else {}),
            **({"tool_decision": self.tool_decision} if self.tool_decision else {}),
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "token_counts": "estimated" if s.estimated else "exact",
            "seconds": round(s.seconds, 3),
            "tokens_per_second": round(s.tokens_per_second, 2),
            "first_token_seconds": round(s.first_token_seconds, 3),
            "finish_reason": s.finish_reason,
            "drafted_tokens": s.drafted_tokens,
            "accepted_tokens": s.accepted_tokens,
        }
        if s.reasoning_tokens:
            record.update(reasoning_tokens=s.reasoning_tokens, reasoning_seconds=round(s.reasoning_seconds, 3))
        return record


def call_record(call: ToolCall) -> dict:
    """A call as it is printed and recorded: {"name", "arguments"} (and "error" when it cannot run)."""
    return {"name": call.name, "arguments": call.arguments, **({"error": call.error} if call.error else {})}


def ran_calls(steps: Sequence[dict]) -> list[dict]:
    """The calls of a tool loop as --json lists them: each with its step, arguments, result, duration and error."""
    keys = ("name", "arguments", "source", "status", "note", "result", "error", "seconds", "truncated")
    return [{"step": n, **{k: c[k] for k in keys if k in c}} for n, step in enumerate(steps, 1) for c in step.get("calls", [])]


def ask(engine: Engine, message: str, sampling: Sampling, *, system: str | None = None,
        on_text: Callable[[str], None] | None = None, spec: JsonSpec | None = None,
        tools: Sequence[ToolSpec] = (), on_reasoning: Callable[[str], None] | None = None,
        session: ToolSession | None = None, on_tool: Callable[[LoopEvent], None] | None = None) -> Answer:
    """Answer one message through the model's chat template; under a spec the answer is validated JSON (in data);
    with tools, the model may call them instead (the calls are returned, nothing runs); with a tool session whose
    tools can run, the calls run (checked, consented to) and the model answers from their results."""
    if session is not None and session.active():
        return _ask_with_tools(engine, message, sampling, session, system=system, on_text=on_text,
                               on_reasoning=on_reasoning, on_tool=on_tool)
    decision = None
    if tools and sampling.tool_choice == "auto":  # whether to call is decided apart from writing the call
        decision = CallDecision(engine).decide(_messages(message, system, spec), tools, sampling.think)
        if decision is not None:
            sampling = sampling.replace(tool_choice="required" if decision else "none")
    prompt, sampling = chat_prompt(engine, message, sampling, system=system, spec=spec, tools=tools)
    answer = _run(engine, prompt, sampling, on_text, on_reasoning, strip_leading=True)
    answer.tools_offered = bool(tools)
    answer.tool_decision = None if decision is None else ("call" if decision else "answer")
    return structured(answer, spec)


def _ask_with_tools(engine: Engine, message: str, sampling: Sampling, session: ToolSession, *, system: str | None,
                    on_text: Callable[[str], None] | None, on_reasoning: Callable[[str], None] | None,
                    on_tool: Callable[[LoopEvent], None] | None) -> Answer:
    """The tool loop for one message: every text the model writes streams (a step's text, then the answer)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    steps: list[dict] = []
    text, trace, at_start = "", [], True
    for event in session.run(engine, messages, sampling, steps):
        if isinstance(event, Text):
            piece = event.text.lstrip() if at_start else event.text
            if not piece:
                continue
            at_start = False
            text += piece
            if on_text is not None:
                on_text(piece)
        elif isinstance(event, Reasoning):
            trace.append(event.text)
            if on_reasoning is not None:
                on_reasoning(event.text)
        elif not isinstance(event, ToolCall):
            if isinstance(event, StepStarted) and not at_start:  # the next reply's text starts on a line of its own
                text += "\n"
                if on_text is not None:
                    on_text("\n")
                at_start = True
            if on_tool is not None:
                on_tool(event)
    answer = Answer(engine.name, text, engine.last_stats, reasoning="".join(trace), tools_offered=True,
                    tool_steps=steps, loop=session.last)
    return answer


def chat_prompt(engine: Engine, message: str, sampling: Sampling, *, system: str | None = None,
                spec: JsonSpec | None = None, tools: Sequence[ToolSpec] = ()) -> tuple[str, Sampling]:
    """The prompt `ask` gives the engine for a message, and the sampling it runs with (a schema's grammar added)."""
    if spec is not None:
        sampling = sampling.replace(json_schema=spec.wire_text)
    if tools:
        sampling = sampling.replace(tools=tools_to_json(tools))
    offered = list(tools) if tools and sampling.tool_choice != "none" else None
    return engine.render_chat(_messages(message, system, spec), tools=offered, think=sampling.think), sampling


def _messages(message: str, system: str | None, spec: JsonSpec | None) -> list[dict]:
    if spec is not None:  # the model is told what the grammar holds it to: small models fill fields far better
        system = f"{system}\n\n{spec.instruction()}" if system else spec.instruction()
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]


def structured(answer: Answer, spec: JsonSpec | None) -> Answer:
    """The answer with its validated JSON value in data when it was asked for under a spec (else unchanged)."""
    if spec is not None:
        answer.data = decode(spec, answer.text, answer.stats.finish_reason)
        answer.structured = True
    return answer


def generate(engine: Engine, text: str, sampling: Sampling, *, on_text: Callable[[str], None] | None = None,
             spec: JsonSpec | None = None) -> Answer:
    """Continue raw text with no chat template (template markers in the text stay plain text); a spec holds it to JSON."""
    if spec is not None:
        sampling = sampling.replace(json_schema=spec.wire_text)
    answer = _run(engine, engine.prompt_tokens(text, special=False), sampling, on_text, None, strip_leading=False)
    return structured(answer, spec)


def _run(engine: Engine, prompt: str | list[int], sampling: Sampling, on_text: Callable[[str], None] | None,
         on_reasoning: Callable[[str], None] | None, strip_leading: bool) -> Answer:
    text, trace, calls = "", [], []
    for event in engine.stream(prompt, sampling):
        if isinstance(event, Text):
            piece = event.text.lstrip() if not text and strip_leading else event.text
            text += piece
            if on_text is not None and piece:
                on_text(piece)
        elif isinstance(event, Reasoning):
            trace.append(event.text)
            if on_reasoning is not None:
                on_reasoning(event.text)
        elif isinstance(event, ToolCall):
            calls.append(event)
    return Answer(engine.name, text, engine.last_stats, reasoning="".join(trace), tool_calls=calls)
