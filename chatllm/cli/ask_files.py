"""`chatllm ask -f FILE|DIR... QUESTION`: the whole files when they fit the window, else retrieval with citations."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

from chatllm.output import Output, format_stats
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.runtime.contract import Engine
    from chatllm.tasks.retrieval import RetrievalAnswer
    from chatllm.tasks.structured import JsonSpec

INDEX_FILE = "index.db"


def ask_files(words: List[str], files: List[Path], settings: Settings, out: Output, *, system: Optional[str],
              spec: "Optional[JsonSpec]", text_spec: "Optional[JsonSpec]", compose: Optional[Callable[[str], str]],
              show_sources: bool) -> None:
    """Answer a question over files: the whole text when it fits (as plain `ask`), else the retrieved passages."""
    from chatllm.inputs import gather_files, prompt_char_limit, read_prompt, read_text, stdin_is_piped
    from chatllm.runtime.loader import load_engine
    from chatllm.runtime.search_index import SearchIndex
    from chatllm.tasks import retrieval

    question = " ".join(words).strip()
    paths = gather_files(files, out.warn)  # before the model loads: bad input fails fast
    piped = read_prompt("-", out.warn, settings.n_ctx, allow_empty=True) if stdin_is_piped() else ""
    total = sum(p.stat().st_size for p in paths) + len(piped.encode("utf-8"))
    texts: Optional[List[str]] = None
    if total <= prompt_char_limit(settings.n_ctx):  # it may fit: read now (more bytes than that cannot fit anyway)
        texts = [read_text(p, out.warn) for p in paths]
    index = SearchIndex(settings.home / INDEX_FILE, fingerprint=retrieval.CHUNKER, warn=out.warn)
    try:
        docs = [retrieval.Doc(str(p), index.file_sha(p)[0], texts[i] if texts else None) for i, p in enumerate(paths)]
        if piped.strip():
            docs.append(retrieval.Doc("stdin", hashlib.sha256(piped.encode("utf-8")).hexdigest(), piped))
        engine = load_engine(settings, out)
        if texts is not None:
            whole = "\n\n".join(t for t in [question, *texts, piped] if t.strip())
            whole = compose(whole) if compose is not None else whole
            if _fits(engine, whole, system, settings):
                if show_sources:
                    for n, doc in enumerate(docs, 1):
                        out.status(f"[{n}] {doc.name}:1-{(doc.text or '').count(chr(10)) + 1} (the whole file: it fits the window)")
                from chatllm.cli.oneshot import answer_text

                answer_text("ask", whole, engine, out, system=system, spec=spec, settings=settings)
                return
        on_text = None if out.as_json or text_spec is not None else out.write
        embedder = _load_embedder(settings, out) if settings.embed_model else None
        try:
            result = retrieval.answer(engine, index, docs, question, settings.sampling, read=lambda d: read_text(d.name, out.warn),
                                      system=system, on_text=on_text, spec=text_spec, compose=compose, embedder=embedder,
                                      on_status=out.status)
        finally:
            if embedder is not None:
                embedder.close()
    finally:
        index.close()
    _show(result, out, text_spec is not None, show_sources)


def _load_embedder(settings: Settings, out: Output) -> "Engine":
    """The embedding model of hybrid retrieval; a refusal's hint names --embed-model, the flag that chose it."""
    from chatllm.errors import ChatllmError
    from chatllm.runtime.loader import load_engine

    try:
        return load_engine(settings, out, settings.embed_model, embedding=True)
    except ChatllmError as exc:
        if exc.hint and " -m " in exc.hint:
            exc.hint = exc.hint.replace(" -m ", " --embed-model ")
        raise


def _fits(engine: "Engine", text: str, system: Optional[str], settings: Settings) -> bool:
    """True when the whole prompt leaves room for the answer in the window (counted with the model's tokenizer)."""
    from chatllm.tasks.retrieval import answer_reserve

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    used = len(engine.prompt_tokens(engine.render_chat(messages)))
    return used + answer_reserve(engine.n_ctx, settings.sampling.max_tokens) <= engine.n_ctx


def _show(result: "RetrievalAnswer", out: Output, structured: bool, show_sources: bool) -> None:
    """The answer's citations after it on stdout (--sources: the passages on stderr), or the --json record."""
    if show_sources:  # stderr, so stdout stays the answer and its citations
        for n, p in enumerate(result.passages, 1):
            out.status(f"[{n}] {p.span} score {p.score:.2f}, {p.tokens} tokens")
            out.status("    " + p.text.replace("\n", "\n    "))

    def human() -> None:
        if structured:
            out.json_value(result.answer.data)
        else:
            if not result.answer.text.endswith("\n"):
                out.write("\n")
            if result.citations:
                out.write("\n" + "".join(f"[{c.source}] {c.span}\n" for c in result.citations))
        if out.err_tty:
            cached = "index cached" if not result.indexed else f"indexed {result.indexed} file(s) in {result.index_seconds:.1f}s"
            out.status(f"{format_stats(result.answer.stats)} · {len(result.passages)} passages · {cached}")

    out.result(result.as_dict(with_text=show_sources), human)

