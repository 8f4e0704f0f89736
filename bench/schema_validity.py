"""Structured output (issue 14): how often answers parse and validate, with the grammar and without, and what it costs.

Five schemas (flat with an enum and a number, nested, an array of objects, numbers and nulls, Chinese strings) over
prompts built from ../shared/data (SST-2 and ChnSentiCorp reviews, SQuAD paragraphs). For every prompt the same
engine answers twice with exactly the same prompt text (system line naming the schema): once constrained by
--schema's grammar, once free ("answer in JSON", then the first {...} in the reply parsed and validated), alternating
which goes first. Reported per model: validity with the grammar (target 100 %), the free answers' parse and
validity rates, and generation speed with the grammar / without on the same prompts in the same run (target >= 0.85).

    python bench/schema_validity.py [--model PATH ...] [--prompts 300] [--max-tokens 160] [--figures FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figures  # noqa: E402
import jsonschema  # noqa: E402

from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.errors import ChatllmError  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.ask import oneshot  # noqa: E402
from chatllm.tasks.ask.structured_output import json_spec  # noqa: E402

DATA = Path(os.environ.get("CHATLLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MODELS = {
    "SmolLM2-135M": "/root/.cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf",
    "Qwen2.5-Coder-0.5B": "/root/.cache/chatllm-test/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
TEXT = {"type": "string", "maxLength": 60}
SCHEMAS = {
    "flat-enum-number": ({"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative"]}, "confidence": {"type": "number"}},
        "required": ["sentiment", "confidence"]}, "sst2", "Classify the sentiment of this review:"),
    "nested": ({"type": "object", "properties": {
        "review": {"type": "object", "properties": {"topic": TEXT, "keywords": {"type": "array", "items": TEXT, "maxItems": 4}},
                   "required": ["topic", "keywords"]},
        "rating": {"type": "integer"}}, "required": ["review", "rating"]}, "sst2", "Describe this review:"),
    "array-of-objects": ({"type": "object", "properties": {
        "entities": {"type": "array", "maxItems": 5, "items": {"type": "object", "properties": {
            "name": TEXT, "kind": {"enum": ["person", "place", "organization", "date", "other"]}},
            "required": ["name", "kind"]}}}, "required": ["entities"]}, "squad", "List the named entities in this text:"),
    "numbers-nulls": ({"type": "object", "properties": {
        "year": {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "people_mentioned": {"type": "integer"},
        "share_of_text_about_history": {"type": "number"}}, "required": ["year", "people_mentioned", "share_of_text_about_history"]},
        "squad", "Extract numbers from this text:"),
    "chinese-strings": ({"type": "object", "properties": {
        "情感": {"enum": ["正面", "负面"]}, "理由": {"type": "string", "maxLength": 30}, "提到的设施": {"type": "array", "items": TEXT,
                                                                                           "maxItems": 3}},
        "required": ["情感", "理由", "提到的设施"]}, "chnsenticorp", "分析这条酒店评论："),
}


def texts(source: str, n: int) -> list[str]:
    """n input texts of one kind from the tuning data (cycled if the file has fewer)."""
    if source == "sst2":
        with open(DATA / "sentiment" / "sst2_tune.tsv", encoding="utf-8") as fh:
            rows = [r["sentence"] for r in csv.DictReader(fh, delimiter="\t")]
    elif source == "chnsenticorp":
        with open(DATA / "sentiment" / "chnsenticorp_tune.csv", encoding="utf-8") as fh:
            rows = [r["review"][:300] for r in csv.DictReader(fh)]
    else:
        squad = json.loads((DATA / "qa" / "squad_v1.1_dev_tune.json").read_text(encoding="utf-8"))
        rows = [p["context"][:500] for art in squad["data"] for p in art["paragraphs"]]
    return [rows[i % len(rows)] for i in range(n)]


def free_parse(text: str):
    """The first {...} of a free answer as JSON, or None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        return json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None


def run_model(label: str, path: str, n_prompts: int, max_tokens: int) -> list[dict]:
    """Every schema over n_prompts prompts on one model: validity both ways and the grammar's speed cost."""
    rows = []
    totals = {"tok_on": 0, "sec_on": 0.0, "tok_off": 0, "sec_off": 0.0}
    with LlamaCppEngine(path, n_ctx=2048) as engine:
        for name, (schema, source, instruction) in SCHEMAS.items():
            spec = json_spec(json.dumps(schema, ensure_ascii=False))
            counts = {"valid_on": 0, "cut_on": 0, "parsed_off": 0, "valid_off": 0}
            started = time.perf_counter()
            for i, text in enumerate(texts(source, n_prompts)):
                sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
                message = f"{instruction}\n\n{text}"
                order = (True, False) if i % 2 == 0 else (False, True)
                for constrained in order:
                    if constrained:
                        try:
                            answer = oneshot.ask(engine, message, sampling, spec=spec)
                            jsonschema.validate(answer.data, schema)
                            counts["valid_on"] += 1
                        except (ChatllmError, jsonschema.ValidationError):
                            counts["cut_on"] += engine.last_stats.finish_reason == "length"
                        key = "on"
                    else:
                        answer = oneshot.ask(engine, message, sampling, system=spec.instruction())
                        value = free_parse(answer.text)
                        if value is not None:
                            counts["parsed_off"] += 1
                            try:
                                jsonschema.validate(value, schema)
                                counts["valid_off"] += 1
                            except jsonschema.ValidationError:
                                pass
                        key = "off"
                    stats = engine.last_stats
                    totals[f"tok_{key}"] += max(stats.completion_tokens - 1, 0)
                    totals[f"sec_{key}"] += stats.seconds - stats.first_token_seconds
            pct = {k: 100.0 * v / n_prompts for k, v in counts.items()}
            print(f"{label:20} {name:18} grammar valid {pct['valid_on']:5.1f} % (cut off at -n {counts['cut_on']}, other invalid "
                  f"{n_prompts - counts['valid_on'] - counts['cut_on']})   free parsed {pct['parsed_off']:5.1f} %"
                  f"  free valid {pct['valid_off']:5.1f} %   ({time.perf_counter() - started:.0f} s)", flush=True)
            rows.append(figures.row("14", f"{label}, {name}: answers valid with --schema ({n_prompts} prompts)",
                                    pct["valid_on"], "%", reference=pct["valid_off"],
                                    reference_label=f"free 'answer in JSON' valid (parsed {pct['parsed_off']:.1f} %)",
                                    target="100 %", met=pct["valid_on"] == 100.0,
                                    note=f"{counts['cut_on']} cut off at --max-tokens {max_tokens} (an error, never printed)"))
    on = totals["tok_on"] / totals["sec_on"] if totals["sec_on"] else 0.0
    off = totals["tok_off"] / totals["sec_off"] if totals["sec_off"] else 0.0
    print(f"{label:20} generation {on:.1f} tok/s with the grammar, {off:.1f} without: {on / off:.2f}x", flush=True)
    rows.append(figures.row("14", f"{label}: generation speed with --schema / without, same prompts, same run", on, "tok/s",
                            reference=off, reference_label="same prompts, no grammar", target=">= 0.85",
                            met=off > 0 and on / off >= 0.85))
    return rows


def main() -> None:
    """Run every schema on every model asked for and print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="model label (repeatable; default both)")
    parser.add_argument("--prompts", type=int, default=300, help="prompts per schema")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--figures", help="write the rows as JSON here (for run_all.py)")
    args = parser.parse_args()
    rows: list[dict] = []
    for label in args.model or list(MODELS):
        rows += run_model(label, MODELS[label], args.prompts, args.max_tokens)
    figures.write(args.figures, rows)


if __name__ == "__main__":
    main()
