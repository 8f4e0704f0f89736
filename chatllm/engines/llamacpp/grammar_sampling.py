"""Grammar-constrained sampling for the llama.cpp engine at close to free-text speed.

Putting the grammar first in the sampler chain makes it test every token of the vocabulary at every step (half the
speed on SmolLM2's 49k vocabulary). Instead, as llama.cpp's own common_sampler does, the token is sampled as usual
and checked alone; only when the grammar rejects it is it sampled again with the grammar applied to the whole
vocabulary. The result obeys the grammar either way; the chain sees one accepted token per step.
"""

from __future__ import annotations

import ctypes
import math
from typing import Sequence

import llama_cpp
from llama_cpp import _internals as internals

from chatllm.errors import ChatllmError, UsageError


def json_schema_grammar(schema: str) -> str:
    """The GBNF grammar for a JSON Schema text (llama-cpp-python's port of llama.cpp's converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(schema)
    except (ValueError, AssertionError, KeyError, TypeError, RecursionError) as exc:
        raise UsageError(f"the schema cannot be turned into a decoding grammar: {str(exc)[:200]}",
                         "simplify the schema (patterns and $refs are the usual cause)") from None
    # The port's string characters admit raw control characters, which JSON forbids inside strings (a raw newline
    # there makes json.loads fail): exclude them as llama.cpp's own json.gbnf does.
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


class GrammarSampler:
    """Samples through `chain` (a llama_sampler pointer it does not own) under a GBNF grammar it owns."""

    def __init__(self, vocab, gbnf: str, chain, n_vocab: int, triggers: Sequence[str] = ()):
        if triggers:  # lazy: every token is free until the generated text matches a trigger pattern
            patterns = (ctypes.c_char_p * len(triggers))(*(t.encode("utf-8") for t in triggers))
            no_tokens = (llama_cpp.llama_token * 1)()
            self._grammar = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
                vocab, gbnf.encode("utf-8"), b"root", patterns, len(triggers), no_tokens, 0)
        else:
            self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._grammar:
            raise ChatllmError("llama.cpp could not build a grammar for this schema", "simplify the schema")
        self._chain = chain
        self._n_vocab = n_vocab
        self._all = internals.LlamaTokenDataArray(n_vocab=n_vocab)
        self._one_data = (llama_cpp.llama_token_data * 1)()
        self._one = llama_cpp.llama_token_data_array(data=self._one_data, size=1, selected=-1, sorted=False)

    def sample(self, ctx, index: int = -1) -> int:
        """The next token from the logits of batch position `index`: the chain's choice if the grammar allows it,
        else the chain's choice among allowed ones."""
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,))
        token = self._pick(logits, with_grammar=False)
        if not self._allowed(token):
            token = self._pick(logits, with_grammar=True)
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Advance the grammar and the chain past a token (sampled, or forced by the caller)."""
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)

    def _pick(self, logits, with_grammar: bool) -> int:
        self._all.copy_logits(logits)
        candidates = self._all.candidates
        candidates.selected = -1
        if with_grammar:
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        if candidates.selected < 0:
            raise ChatllmError("the sampler chose no token under the schema's grammar", "simplify the schema")
        return int(candidates.data[candidates.selected].id)

    def _allowed(self, token: int) -> bool:
        self._one_data[0] = llama_cpp.llama_token_data(token, 1.0, 0.0)
        self._one.size, self._one.selected, self._one.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one))
        return not math.isinf(self._one_data[0].logit)

    def close(self) -> None:
        """Free the grammar sampler."""
        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
