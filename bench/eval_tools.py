"""Tool calling on BFCL v4 (simple, multiple, parallel, irrelevance), scored as BFCL's AST checker scores a reply.

Data: ../shared/data/tools/bfcl_{category}_tuning.jsonl (every third item of each category; see its README for how
BFCL scores). Three methods, in the same run, on the same model:

- chatllm: one `chatllm ask --tools FILE --json PROMPT` process per item, as a user runs it; the calls are the
  record's `tool_calls`.
- baseline-strict: the model's own template with the tools, free greedy decoding (the same engine, in process),
  the reply parsed as the template asks: only calls inside <tool_call> tags (Hermes) count.
- baseline-lenient: the same replies, parsed leniently: any JSON object with a name and arguments, markdown blocks
  included (the best a parser alone can do with free decoding).

    python bench/eval_tools.py --model ~/.cache/chatllm-test/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --limit 30
    python bench/eval_tools.py --model ~/.cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf --split odd

--split even|odd|all picks every other item (tune on even, report odd) so tuning and reporting never share a row.
Also measured: decoding speed with the tool grammar active (--tool-choice required) against free decoding of the
same prompts, in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tools"
CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")
_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


# -- BFCL's data in JSON Schema --------------------------------------------------------------------------------------


def json_schema(node):
    """BFCL's schema dialect ("dict", "float", "tuple", "any") as JSON Schema."""
    if isinstance(node, list):
        return [json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("optional",)}
    kind = out.get("type")
    if not isinstance(kind, str):  # a property named "type", not the keyword
        return out
    if kind == "any":
        out.pop("type")
    elif kind in _TYPES:
        out["type"] = _TYPES[kind]
    return out


def tool_defs(row: dict) -> list[dict]:
    """The item's functions in OpenAI's form."""
    return [{"type": "function", "function": {"name": f["name"], "description": f.get("description", ""),
                                              "parameters": json_schema(f["parameters"])}} for f in row["functions"]]


def rows(category: str, split: str, limit: int | None) -> list[dict]:
    """The tuning items of a category (every other one for --split even|odd)."""
    items = [json.loads(line) for line in (DATA / f"bfcl_{category}_tuning.jsonl").read_text(encoding="utf-8").splitlines()]
    if split in ("even", "odd"):
        items = items[(split == "odd")::2]
    return items[:limit] if limit else items


# -- BFCL's AST checker ----------------------------------------------------------------------------------------------


def _norm(value):
    if isinstance(value, str):
        return "".join(ch for ch in value if ch not in " ,./-_*^").lower()
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _type_ok(value, kind: str | None) -> bool:
    if kind in ("integer",):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "number"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("array", "tuple"):
        return isinstance(value, list)
    if kind == "dict":
        return isinstance(value, dict)
    return True


def call_matches(call: dict, truth: dict, function: dict) -> bool:
    """One decoded call {name: {param: value}} against one ground-truth call {name: {param: [acceptable...]}}."""
    (name, args), = call.items()
    (t_name, t_args), = truth.items()
    if name != t_name or not isinstance(args, dict):
        return False
    props = function["parameters"].get("properties", {})
    required = function["parameters"].get("required", [])
    if any(p not in args for p in required):
        return False
    for param, value in args.items():
        if param not in t_args:
            return False
        if not _type_ok(value, props.get(param, {}).get("type")):
            return False
        acceptable = t_args[param]
        if isinstance(value, float) or (isinstance(value, int) and props.get(param, {}).get("type") == "float"):
            if not any(isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == float(value) for a in acceptable):
                return False
        elif _norm(value) not in [_norm(a) for a in acceptable if a != ""]:
            return False
    for param, acceptable in t_args.items():
        if param not in args and "" not in acceptable:
            return False
    return True


def score(category: str, row: dict, calls: list[dict]) -> bool:
    """BFCL's verdict on a reply decoded into calls [{name: {param: value}}]."""
    truth = row["ground_truth"]
    if category == "irrelevance":
        return not calls
    functions = {f["name"]: f for f in row["functions"]}
    if len(calls) != len(truth):
        return False
    unmatched = list(truth)
    for call in calls:
        (name, _), = call.items()
        hit = next((t for t in unmatched if name in functions and call_matches(call, t, functions[name])), None)
        if hit is None:
            return False
        unmatched.remove(hit)
    return True


# -- the methods -----------------------------------------------------------------------------------------------------


def run_chatllm(model: str, row: dict, home: Path, extra: list[str]) -> tuple[list[dict], float, dict]:
    """One `chatllm ask --tools FILE --json` process: its calls, its wall time and its record."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump(tool_defs(row), fh)
        tools_file = fh.name
    env = dict(os.environ, CHATLLM_HOME=str(home), HF_HUB_OFFLINE="1", NO_COLOR="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "chatllm", "ask", "-m", model, "-t", "0", "-n", "256", "--tools",
                           tools_file, "--json", *extra, row["messages"][0]["content"]],
                          capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    os.unlink(tools_file)
    try:
        record = json.loads(proc.stdout)
    except ValueError:
        record = {"error": proc.stderr.strip()[-300:]}
    calls = [{c["name"]: c.get("arguments", {})} for c in record.get("tool_calls", []) if not c.get("error")]
    return calls, wall, record


def baseline_reply(engine, row: dict) -> str:
    """The model's own template with the tools, free greedy decoding, no grammar: the raw reply."""
    from chatllm.engines.chat_formats.tool_calls import ToolSpec
    from chatllm.engines.contract import complete
    from chatllm.settings import Sampling

    tools = [ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"]) for t in tool_defs(row)]
    prompt = engine.render_chat(row["messages"], tools=tools)
    return complete(engine, engine.prompt_tokens(prompt), Sampling(temperature=0, max_tokens=256))


def strict_calls(reply: str) -> list[dict]:
    """Calls as the Hermes template asks for them: JSON inside <tool_call> tags, nothing else."""
    import re

    found = []
    for body in re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", reply, re.S):
        try:
            value = json.loads(body)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            found.append({value["name"]: value.get("arguments", {})})
    return found


def lenient(reply: str) -> list[dict]:
    """Any JSON object with a name and arguments, markdown blocks included."""
    from chatllm.engines.chat_formats.tool_calls import lenient_calls

    return [{c["name"]: c["arguments"] if isinstance(c["arguments"], dict) else {}} for c in lenient_calls(reply) or []]


def grammar_speed(engine, items: list[tuple[str, dict]], max_tokens: int = 64) -> tuple[float, float]:
    """Generation tok/s after the first token: calls held to the tools' grammar from the first token (tool_choice
    required) against free decoding of the same prompts (the tools rendered, no grammar); alternated item by item."""
    from chatllm.engines.chat_formats.tool_calls import ToolSpec, tools_to_json
    from chatllm.engines.contract import complete
    from chatllm.settings import Sampling

    held, free = [], []
    for _, row in items:
        tools = [ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
                 for t in tool_defs(row)]
        prompt = engine.prompt_tokens(engine.render_chat(row["messages"], tools=tools))
        base = Sampling(temperature=0, max_tokens=max_tokens, repeat_penalty=1.0)
        for sampling, into in ((base.replace(tools=tools_to_json(tools), tool_choice="required"), held), (base, free)):
            complete(engine, prompt, sampling)
            stats = engine.last_stats
            if stats.completion_tokens > 4:
                into.append(stats.tokens_per_second)
    return sum(held) / len(held), sum(free) / len(free)


def main() -> None:
    """Score the methods per category and print (and keep) the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--split", default="all", choices=("all", "even", "odd"))
    ap.add_argument("--limit", type=int, help="items per category")
    ap.add_argument("--methods", default="chatllm,baseline")
    ap.add_argument("--extra", default="", help="more flags for `chatllm ask` (e.g. '--tool-choice required')")
    ap.add_argument("--json", type=Path, help="write every item's result here")
    ap.add_argument("--figures", help="write the figure rows to this JSON file")
    ap.add_argument("--speed", type=int, default=0, help="also time N prompts with and without the tool grammar")
    args = ap.parse_args()
    methods = args.methods.split(",")
    engine = None
    if "baseline" in methods:
        from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

        engine = LlamaCppEngine(os.path.expanduser(args.model), n_ctx=4096)
    results: dict[str, dict[str, list[bool]]] = {}
    details = []
    walls: list[float] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        for category in args.categories.split(","):
            for row in rows(category, args.split, args.limit):
                item = {"id": row["id"], "category": category}
                if "chatllm" in methods:
                    calls, wall, record = run_chatllm(os.path.expanduser(args.model), row, Path(home), args.extra.split())
                    walls.append(wall)
                    item["chatllm"] = {"calls": calls, "ok": score(category, row, calls), "text": record.get("text", "")[:200],
                                       "error": record.get("error")}
                    results.setdefault("chatllm", {}).setdefault(category, []).append(item["chatllm"]["ok"])
                if engine is not None:
                    reply = baseline_reply(engine, row)
                    for name, parse in (("baseline-strict", strict_calls), ("baseline-lenient", lenient)):
                        calls = parse(reply)
                        item[name] = {"calls": calls, "ok": score(category, row, calls)}
                        results.setdefault(name, {}).setdefault(category, []).append(item[name]["ok"])
                    item["reply"] = reply[:300]
                details.append(item)
                print(json.dumps({k: (v["ok"] if isinstance(v, dict) and "ok" in v else v) for k, v in item.items()
                                  if k != "reply"}), flush=True)
    print(f"\n{Path(args.model).name}, split {args.split}, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| method | " + " | ".join(args.categories.split(",")) + " |")
    print("|---|" + "---:|" * len(args.categories.split(",")))
    rows_out = []
    for method, per in results.items():
        cells = []
        for category in args.categories.split(","):
            ok = per.get(category, [])
            cells.append(f"{100 * sum(ok) / len(ok):.0f} % ({sum(ok)}/{len(ok)})" if ok else "-")
            if ok:
                rows_out.append(figures.row("tools", f"BFCL {category}, {method}", 100 * sum(ok) / len(ok), "%"))
        print(f"| {method} | " + " | ".join(cells) + " |")
    if walls:
        print(f"chatllm: {sum(walls) / len(walls):.1f} s per item (process start and model load included)")
    if args.speed:
        from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

        engine = engine or LlamaCppEngine(os.path.expanduser(args.model), n_ctx=4096)
        held, free = grammar_speed(engine, [("simple", r) for r in rows("simple", args.split, args.speed)])
        print(f"decoding with the tool grammar: {held:.1f} tok/s, free: {free:.1f} tok/s, ratio {held / free:.2f}")
        rows_out.append(figures.row("tools", "decoding tok/s with the tool grammar / free", held, "tok/s", reference=free,
                                    reference_label="free decoding", target=">= 0.85", met=held / free >= 0.85))
    if args.json:
        args.json.write_text(json.dumps(details, ensure_ascii=False, indent=1))
    if args.figures:
        figures.write(args.figures, rows_out)


if __name__ == "__main__":
    main()
