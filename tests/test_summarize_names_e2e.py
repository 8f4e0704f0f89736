"""The main names of a long text survive `chatllm summarize` with the real SmolLM2 model (issue 13)."""

from __future__ import annotations

import json
import random

import pytest

from chatllm.tasks.summarize.names.entities import EntityTracker, invented_names

pytestmark = pytest.mark.model
MAIN = ["Orla Venn", "Ansel Ruud", "Tamsin", "Kestrel Bay"]


def chronicle(words: int = 2000) -> str:
    """A made-up chronicle (public domain: written here) of a harbour town, its main names recurring throughout."""
    rng = random.Random(13)
    people = ["Orla Venn", "Ansel Ruud", "Tamsin"]
    deeds = [
        "{a} sailed out of Kestrel Bay at dawn to look for the missing fishing boat",
        "{a} found the boat drifting near the northern rocks and towed it home",
        "{a} argued with {b} about the cost of repairing the old harbour wall",
        "{a} helped {b} carry the nets up from the beach before the storm",
        "{a} wrote a letter to the Marlow Company asking for a new lamp for the lighthouse",
        "{a} climbed the lighthouse at Kestrel Bay and mended the broken window",
        "{a} taught the children of the town how to read the tide tables",
        "{a} sold the summer catch at the market and paid the town's debts",
    ]
    weather = ["The wind was cold.", "Rain fell all afternoon.", "The sea was calm for once.", "Fog hid the rocks."]
    paragraphs, count = [], 0
    day = 1
    while count < words:
        a, b = rng.sample(people, 2)
        sentences = [f"On day {day}, " + rng.choice(deeds).format(a=a, b=b) + ".", rng.choice(weather)]
        sentences.append(f"Later {b} said that {a.split()[0]} had done well, and the town of Kestrel Bay agreed.")
        paragraphs.append(" ".join(sentences))
        count += sum(len(s.split()) for s in sentences)
        day += 1
    return "\n\n".join(paragraphs) + "\n"


def test_main_names_of_a_long_text_survive_the_map_reduce(chatllm, tmp_path):
    text = chronicle()
    doc = tmp_path / "chronicle.txt"
    doc.write_text(text, encoding="utf-8")
    r = chatllm("summarize", "--ctx", "1536", "-t", "0", "--length", "short", "--json", "--notes", str(doc), timeout=420)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["levels"] >= 1 and data["chunks"] >= 2, data
    listed = [e["name"] for e in data["entities"]]
    assert {"Orla Venn", "Ansel Ruud", "Tamsin", "Kestrel Bay"} <= set(listed), listed
    summary = data["summary"]
    kept = [n for n in MAIN if n in summary]
    assert len(kept) >= 3, (kept, summary)  # most main names, as written: those the model left out got a sentence each
    assert all(n in summary and n in listed for n in data["added_names"]), data["added_names"]
    tracker = EntityTracker()
    for i in range(0, len(text), 3000):
        tracker.observe(text[i:i + 3000])
    assert invented_names(summary, tracker) == [], summary
    assert len(data["notes"][0]) == data["chunks"] and all(isinstance(n, str) for n in data["notes"][0])


def test_notes_need_json(chatllm, tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text("A short text about Orla Venn.\n")
    r = chatllm("summarize", "--notes", "-m", str(tmp_path / "no-such-model.gguf"), str(doc))
    assert r.returncode == 2 and r.stderr.startswith("error: --notes goes with --json") and "hint:" in r.stderr
