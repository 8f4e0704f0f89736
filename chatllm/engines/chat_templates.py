"""Chat templates from model data, rendered in a sandbox the same way for every engine; the context-fit check."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from chatllm.errors import ChatllmError, ContextOverflowError


class ChatTemplate:
    """A GGUF's (or a server's) Jinja chat template, compiled once in an immutable sandbox.

    The environment matches llama-cpp-python's and Transformers' chat-template settings (trim and lstrip blocks,
    loop controls, {% generation %} tags ignored, tojson without ASCII escapes), so a prompt renders byte for byte
    as the model's own tooling would render it.
    """

    def __init__(self, source: str, *, bos: str, eos: str, model: str, hint: str):
        import jinja2
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class IgnoreGenerationTags(ext.Extension):
            tags = {"generation"}

            def parse(self, parser):
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        env = ImmutableSandboxedEnvironment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
                                            extensions=[IgnoreGenerationTags, ext.loopcontrols])
        env.filters["tojson"] = _tojson
        self.bos, self.eos, self.model, self.hint = bos, eos, model, hint
        try:
            self._template: Any = env.from_string(source)
        except Exception as exc:  # the template is untrusted model data: any failure is the template's
            raise self._failure(exc) from None

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text for these messages (and extra variables: tools, enable_thinking...); ChatllmError when the
        template fails or refuses them. `tools` is always passed (None without tools), as Transformers does: a
        template that tests `tools is not none` must not see an undefined value as tools offered."""
        try:
            return self._template.render(
                messages=messages, bos_token=self.bos, eos_token=self.eos, add_generation_prompt=add_generation_prompt,
                raise_exception=_raise_template_error, strftime_now=lambda f: datetime.now().strftime(f),
                **{"tools": None, **variables},
            )
        except ChatllmError:
            raise
        except Exception as exc:  # the template is untrusted model data: any failure is the template's
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> ChatllmError:
        return ChatllmError(f"the chat template of {self.model} failed to render: {type(exc).__name__}: {str(exc)[:200]}",
                            self.hint)


def check_fits(n_prompt: int, reserve: int, n_ctx: int) -> None:
    """ContextOverflowError unless a prompt of n_prompt tokens leaves `reserve` tokens of the window for the reply."""
    if n_prompt + reserve > n_ctx or n_prompt >= n_ctx:
        raise ContextOverflowError(n_prompt, n_ctx, reserve if n_prompt < n_ctx else 0)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_template_error(message: str):
    raise ChatllmError(f"the chat template refused the conversation: {message}", "check the roles, or pass --chat-format")
