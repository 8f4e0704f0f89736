"""The decoding grammar of tool calls: from the moment a call starts, the name is one of the offered tools' and the
arguments match that tool's JSON Schema; before it, the model is free (a lazy grammar, started by trigger patterns).

As llama.cpp's own chat formats do (grammar_lazy + grammar_triggers), each family's call syntax is a grammar and
the text that opens a call a trigger: `<tool_call>` for Hermes/Qwen, `[TOOL_CALLS]` for Mistral, `<|python_tag|>`
or a JSON object opening with "name" for Llama 3. The triggers also catch what small models write instead of the
template's tags (Qwen2.5-Coder-0.5B answers a tool question with a markdown JSON block): a fenced or bare JSON object
that opens with "name" is held to the same grammar, so it comes out as a valid call. With tool_choice "required" or
a tool's name the grammar holds from the first token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from chatllm.engines.chat_formats.formats import ChatFormat
from chatllm.engines.chat_formats.tool_calls import ToolSpec, call_schema
from chatllm.engines.llamacpp.grammar_sampling import json_schema_grammar

# JSON written the way models write it: a space, or a line break and indentation, between tokens.
_LOOSE_SPACE = 'space ::= ( " " | "\\n" [ \\t]{0,20} )?'
_WS = 'ws ::= [ \\t\\n]{0,40}'


@dataclass(frozen=True)
class GrammarSpec:
    """A GBNF grammar and, for a lazy one, the regular expressions whose first match (group) starts it."""

    gbnf: str
    triggers: tuple[str, ...] = ()

    @property
    def lazy(self) -> bool:
        """True when the model is free until a trigger matches."""
        return bool(self.triggers)


def tool_call_grammar(tools: Sequence[ToolSpec], fmt: ChatFormat, choice: str = "auto") -> GrammarSpec | None:
    """The grammar of the model's calls to these tools in its family's syntax; None where chatllm only parses."""
    if not tools or choice == "none" or fmt.tools in ("harmony", "mistral-args"):
        return None
    only = choice if choice not in ("auto", "required") else None
    schema = call_schema(tools, key=fmt.arguments_key, only=only)
    if fmt.tools == "generic":
        schema = {"type": "object", "properties": {"tool_calls": {"type": "array", "items": schema, "minItems": 1}},
                  "required": ["tool_calls"], "additionalProperties": False}
    rules = _renamed_root(json_schema_grammar(json.dumps(schema, ensure_ascii=False)), "call")
    fence = '"```" ("json" | "JSON")? ws call ws "```"'
    triggers: tuple[str, ...]
    if fmt.tools == "hermes" and only is not None:  # one call to the named tool, in the tags, a fence or bare
        root = f'root ::= "<tool_call>" ws call ws "</tool_call>" | fenced | call\nfenced ::= {fence}'
        triggers = ()
    elif fmt.tools == "hermes" and choice == "required":
        # Held from the first token, the calls are a list when they are not in the template's tags: a small model
        # that writes one JSON object per reply writes a list of several when a request asks for several
        # (BFCL parallel, Qwen2.5-Coder-0.5B: 0/8 right as one object, 4/8 as a list; docs/BENCHMARKS.md).
        root = ('root ::= tagged (ws tagged)* | "```" ("json" | "JSON")? ws calls ws "```" | calls\n'
                'tagged ::= "<tool_call>" ws call ws "</tool_call>"\n'
                'calls ::= "[" ws call (ws "," ws call)* ws "]"')
        triggers = ()
    elif fmt.tools == "hermes":
        root = ('root ::= block (ws block)*\nblock ::= "<tool_call>" ws call ws "</tool_call>" | fenced | call\n'
                f"fenced ::= {fence}")
        triggers = ("(<tool_call>)", r'(```(?:json|JSON)?\s*\{\s*"name")', r'^\s*(\{\s*"name")')
    elif fmt.tools == "llama3":
        root = 'root ::= ("<|python_tag|>")? call (ws call)*'
        triggers = (r"(<\|python_tag\|>)", r'^\s*(\{\s*"name")')
    elif fmt.tools == "mistral":
        root = 'root ::= "[TOOL_CALLS]" ws "[" ws call (ws "," ws call)* ws "]"'
        triggers = (r"(\[TOOL_CALLS\])",)
    else:  # generic: {"tool_calls": [...]}, bare or in a fence
        root = f"root ::= call | fenced\nfenced ::= {fence}"
        triggers = (r'^\s*(\{\s*"tool_calls")', r'(```(?:json|JSON)?\s*\{\s*"tool_calls")')
    gbnf = "\n".join([root, _WS, rules])
    return GrammarSpec(gbnf, () if choice != "auto" else triggers)


def _renamed_root(grammar: str, name: str) -> str:
    """The converter's grammar with its root rule renamed (so a wrapper can be the root) and JSON spacing loosened."""
    lines = []
    for line in grammar.splitlines():
        if line.startswith("root ::="):
            line = f"{name} ::=" + line[len("root ::="):]
        elif line.startswith("space ::="):
            line = _LOOSE_SPACE
        lines.append(line)
    return "\n".join(lines)
