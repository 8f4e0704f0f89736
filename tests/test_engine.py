"""The real llama.cpp engine on the real SmolLM2 model (and base Gemma 3 for a model with no template)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatllm.engines.contract import complete, text_stream
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
from chatllm.engines.stop_strings import StopFilter
from chatllm.errors import ChatllmError, ContextOverflowError
from chatllm.settings import Sampling

pytestmark = pytest.mark.model
GREEDY = Sampling(temperature=0, max_tokens=48, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def engine(smollm_path):
    eng = LlamaCppEngine(smollm_path, n_ctx=1024)
    yield eng
    eng.close()


def chat(engine, text):
    return engine.render_chat([{"role": "user", "content": text}])


@pytest.mark.parametrize("text", ["用中文写一句关于春天的诗。", "Reply with three emoji about cats 🐱🎉", "Écris une phrase en français."])
def test_streamed_text_equals_whole_text_byte_for_byte(engine, text):
    prompt = chat(engine, text)
    pieces = list(text_stream(engine.stream(prompt, GREEDY)))
    whole = complete(engine, prompt, GREEDY)
    assert "".join(pieces).encode() == whole.encode()
    assert all("\ufffd" not in p for p in pieces)  # no split multi-byte character


def test_multibyte_pieces_are_whole_characters(engine):
    pieces = list(text_stream(engine.stream(chat(engine, "请用中文回答：天空为什么是蓝色的？"), GREEDY)))
    text = "".join(pieces)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
    for piece in pieces:
        piece.encode("utf-8")  # every piece is valid text on its own


def test_shared_prefix_is_reused_from_the_kv_cache(engine):
    first = engine.render_chat([{"role": "user", "content": "Name a colour."}])
    complete(engine, first, GREEDY)
    longer = engine.render_chat([
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ])
    complete(engine, longer, GREEDY)
    stats = engine.last_stats
    assert stats.cached_tokens >= len(engine.prompt_tokens(first)) - 2
    assert stats.cached_tokens < stats.prompt_tokens


def test_prompt_too_long_is_a_typed_error_naming_the_sizes(engine):
    with pytest.raises(ContextOverflowError) as info:
        list(engine.stream("word " * 3000, GREEDY))
    assert "tokens exceed the 1024-token context window" in info.value.message


def test_seeded_sampling_repeats_and_max_tokens_caps(engine):
    s = Sampling(temperature=0.9, seed=7, max_tokens=12)
    prompt = chat(engine, "Tell me a story.")
    assert complete(engine, prompt, s) == complete(engine, prompt, s)
    assert engine.last_stats.completion_tokens <= 12


def test_stop_string_cuts_the_output(engine):
    text = complete(engine, chat(engine, "Count from 1 to 10, separated by commas."), GREEDY.replace(stop=("5",)))
    assert "5" not in text and "6" not in text


def test_stop_filter_holds_back_partial_matches():
    f = StopFilter(["</end>"])
    assert f.feed("hello </e") == "hello "
    assert f.feed("nd> tail") == "" and f.stopped
    g = StopFilter(["STOP"])
    assert g.feed("ST") == "" and g.feed("ART") == "START" and not g.stopped


def test_score_continuations_prefers_the_likely_word(engine):
    blue, green = engine.score_continuations(
        "The colour of the clear daytime sky is", [engine.tokenize(" blue"), engine.tokenize(" green")]
    )
    assert blue > green
    multi = engine.score_continuations("The sky is", [engine.tokenize(" very blue indeed")])[0]
    assert multi < 0


def test_model_without_template_refuses_chat_but_override_works(gemma_path):
    eng = LlamaCppEngine(gemma_path, n_ctx=512)
    try:
        with pytest.raises(ChatllmError) as info:
            eng.render_chat([{"role": "user", "content": "hi"}])
        assert "no chat template" in info.value.message and "--chat-format" in info.value.hint
        assert complete(eng, eng.prompt_tokens("The capital of France is", special=False), GREEDY.replace(max_tokens=8))
    finally:
        eng.close()
    eng = LlamaCppEngine(gemma_path, n_ctx=512, chat_format="gemma")
    try:
        assert "<start_of_turn>user" in eng.render_chat([{"role": "user", "content": "hi"}])
    finally:
        eng.close()


def test_loading_prints_nothing_on_stderr(gemma_path):
    code = (
        "import sys; from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine, captured_log;"
        f"e = LlamaCppEngine({str(gemma_path)!r}, n_ctx=256); e.close();"
        "sys.stdout.write(str(len(captured_log())))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert int(r.stdout) > 0  # llama.cpp did log: it was captured, not printed
