"""The names a document is about, found without the model: capitalised runs in English, proper-noun n-grams in Chinese.

A model of 135M parameters forgets or scrambles names between map-reduce levels; counting does not. Entities are
ranked by how often they occur and how widely they are spread over the document's segments (its chunks), and a
document index (its words, numbers and CJK bigrams) says whether a name in a summary occurs in the text at all.
Everything here works on a stream of segments, so memory stays bounded however long the input is.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from chatllm.tasks.summarize.names.kinship import KinshipIndex
from chatllm.tasks.summarize.names.name_patterns import (
    ALL_WORDS,
    CJK_CHAR,
    CJK_RUN,
    YEAR,
    capitalised_runs,
    cjk_name_shape,
    cjk_ngrams,
    clean_word,
    core,
    name_candidates,
    suppress_substrings,
)

MAX_TRACKED = 200_000  # distinct candidates kept; rare ones are pruned past this, bounding memory on huge inputs


@dataclass
class Entity:
    """A name the document is about, with how often and how widely it occurs."""

    name: str
    count: int
    spread: int  # segments it occurs in

    def as_dict(self) -> dict:
        """The JSON-able form."""
        return {"name": self.name, "count": self.count, "spread": self.spread}


class EntityTracker:
    """Entity statistics over a document seen segment by segment (its chunks), and its index for checking names."""

    def __init__(self) -> None:
        self.segments = 0
        self.mid: collections.Counter = collections.Counter()  # core -> capitalised occurrences not starting a sentence
        self.initial: collections.Counter = collections.Counter()  # core -> occurrences at a sentence start
        self.forms: dict[str, collections.Counter] = {}  # core -> surface forms seen
        self.spread: collections.Counter = collections.Counter()
        self.lower: collections.Counter = collections.Counter()  # lowercase uses of single words ("queen" vs "Queen")
        self.cjk: collections.Counter = collections.Counter()
        self.cjk_spread: collections.Counter = collections.Counter()
        self.words: set[str] = set()  # every word of the document, lowercased
        self.years: set[str] = set()
        self.bigrams: set[str] = set()  # every CJK bigram of the document
        self.kinship = KinshipIndex()

    # -- reading --------------------------------------------------------------------------------

    def observe(self, text: str) -> list[str]:
        """Count one segment; returns the entities it mentions, best first (what its map note is told)."""
        self.segments += 1
        local: collections.Counter = collections.Counter()
        local_mid: collections.Counter = collections.Counter()
        for run, initial in capitalised_runs(text):
            key = core(run)
            local[key] += 1
            (self.initial if initial else self.mid)[key] += 1
            if not initial:
                local_mid[key] += 1
            self.forms.setdefault(key, collections.Counter())[run] += 1
        for key in local:
            self.spread[key] += 1
        for word in ALL_WORDS.findall(text):
            low = word.lower()
            self.words.add(clean_word(low))
            if word[0].islower():
                self.lower[low] += 1
        self.years.update(YEAR.findall(text))
        grams = cjk_ngrams(text)
        for run in CJK_RUN.findall(text):
            self.bigrams.update(run[i:i + 2] for i in range(len(run) - 1))
        self.cjk.update(grams)
        self.cjk_spread.update(grams.keys())
        self.kinship.observe(text)
        self._prune()
        return self._local(local, local_mid, grams)

    def _prune(self) -> None:
        if len(self.cjk) > MAX_TRACKED:
            for key in [k for k, n in self.cjk.items() if n <= 1]:
                del self.cjk[key], self.cjk_spread[key]
        if len(self.forms) > MAX_TRACKED:
            for key in [k for k in self.forms if self.mid.get(k, 0) + self.initial.get(k, 0) <= 1]:
                for table in (self.mid, self.initial, self.spread, self.forms):
                    table.pop(key, None)

    def _is_name(self, key: str, mid: int, initial: int) -> bool:
        """A capitalised run names something when it is capitalised mid-sentence more often than written lowercase."""
        if mid == 0:
            return False
        if " " not in key:
            return self.lower.get(key, 0) < mid + initial
        return True

    def _local(self, local: collections.Counter, local_mid: collections.Counter, grams: collections.Counter,
               limit: int = 8) -> list[str]:
        found: list[tuple[float, str]] = []
        for key, n in local.items():
            known = self.mid.get(key, 0)
            if (local_mid[key] or known >= 2) and self._is_name(key, known, self.initial.get(key, 0)) and (n >= 2 or known >= 3):
                found.append((n, self.display(key)))
        common = {g: n for g, n in grams.items() if n >= 3 or (n >= 2 and self.cjk[g] >= 4)}
        found += [(n * cjk_name_shape(g) / 2, g) for g, n in suppress_substrings(common).items()]
        found.sort(key=lambda x: -x[0])
        return _dedupe([name for _, name in found])[:limit]

    def display(self, key: str) -> str:
        """The way the text writes a name most often (titles kept: "Dr. Mortimer")."""
        forms = self.forms.get(key)
        return forms.most_common(1)[0][0] if forms else key

    # -- results --------------------------------------------------------------------------------

    def top(self, n: int = 10) -> list[Entity]:
        """The main entities: frequent and spread over the document, best first."""
        segs = max(1, self.segments)
        min_spread = 2 if segs >= 3 else 1
        scored: list[tuple[float, Entity]] = []
        for key, mid in self.mid.items():
            count = mid + self.initial.get(key, 0)
            if count < 3 or self.spread[key] < min_spread or not self._is_name(key, mid, self.initial.get(key, 0)):
                continue
            scored.append((count * (0.5 + self.spread[key] / segs), Entity(self.display(key), count, self.spread[key])))
        cjk = {g: c for g, c in self.cjk.items() if c >= 3 and self.cjk_spread[g] >= min_spread}
        for gram, count in suppress_substrings(cjk).items():
            spread = self.cjk_spread[gram]
            # Frequency alone favours common words (仿佛, 非常): the shape of a name counts as much.
            scored.append((count * (0.5 + spread / segs) * cjk_name_shape(gram) / 2, Entity(gram, count, spread)))
        scored.sort(key=lambda x: -x[0])
        kept: list[Entity] = []
        for ent in self._joined([ent for _, ent in scored[:3 * n]]) + [ent for _, ent in scored[3 * n:]]:
            if not any(_same(ent.name, k.name) for k in kept):
                kept.append(ent)
            if len(kept) >= n:
                break
        return kept

    def _joined(self, ranked: list[Entity]) -> list[Entity]:
        """Main names that are parts of one name the text also writes whole ("Jim" and "Hawkins": "Jim Hawkins"; "Long
        John" and "John Silver": "Long John Silver") become it, in the place of the better ranked: one entity, not two,
        and the full name is what a reader needs."""
        for _ in range(3):  # a joined name may join again
            joined = self._join_once(ranked)
            if len(joined) == len(ranked):
                break
            ranked = joined
        return ranked

    def _join_once(self, ranked: list[Entity]) -> list[Entity]:
        names = [core(e.name).split() if not CJK_CHAR.search(e.name) else [] for e in ranked]
        by_word: dict[str, set[int]] = collections.defaultdict(set)
        for i, words in enumerate(names):
            for w in words:
                by_word[w].add(i)
        best: dict[tuple[int, int], tuple[int, str]] = {}  # (rank, rank) -> (count, core) of the commonest whole run
        for key in self.forms:  # every run seen, mid-sentence or not
            parts = key.split()
            count = self.mid.get(key, 0) + self.initial.get(key, 0)
            if len(parts) < 2 or count < 2 or not any(w in by_word for w in parts):
                continue
            spans = [(at, at + len(names[i]), i) for i in set().union(*(by_word.get(w, set()) for w in parts))
                     if (at := _find(parts, names[i])) >= 0]
            for s1, e1, a in spans:
                for s2, e2, b in spans:
                    # b follows a (adjacent, one of them a single word; or overlapping) and together they are the run
                    fits = (e1 == s2 and min(e1 - s1, e2 - s2) == 1) or s1 < s2 < e1 < e2
                    if fits and s1 == 0 and e2 == len(parts):
                        pair = (min(a, b), max(a, b))
                        if count > best.get(pair, (0, ""))[0]:
                            best[pair] = (count, key)
        out, used, dropped = list(ranked), set(), set()
        for (a, b), (count, key) in sorted(best.items(), key=lambda kv: (kv[0][0], -kv[1][0])):
            if a in used or b in used:
                continue
            used |= {a, b}
            dropped.add(b)
            ea, eb = ranked[a], ranked[b]
            out[a] = Entity(self.display(key), ea.count + eb.count, max(ea.spread, eb.spread))
        return [e for i, e in enumerate(out) if i not in dropped]

    def occurs(self, name: str) -> bool:
        """Whether a name (English words, CJK characters or a year) occurs in the document seen so far."""
        if YEAR.fullmatch(name):
            return name in self.years
        for run in CJK_RUN.findall(name):
            if len(run) >= 2 and not all(run[i:i + 2] in self.bigrams for i in range(len(run) - 1)):
                return False
        return all(clean_word(w.lower()) in self.words for w in ALL_WORDS.findall(name) if not CJK_CHAR.search(w))


def _find(words: list[str], part: list[str]) -> int:
    """Where the word list `part` starts inside `words`; -1 if it is not there."""
    n = len(part)
    if not n:
        return -1
    return next((i for i in range(len(words) - n + 1) if words[i:i + n] == part), -1)


def _same(a: str, b: str) -> bool:
    """Whether two names are one entity for listing: one's core is a word-part of the other's (Holmes, Sherlock Holmes)."""
    ca, cb = core(a), core(b)
    if ca == cb:
        return True
    if CJK_CHAR.search(a) or CJK_CHAR.search(b):
        return ca in cb or cb in ca
    wa, wb = set(ca.split()), set(cb.split())
    return wa <= wb or wb <= wa


def _dedupe(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not any(_same(name, k) for k in out):
            out.append(name)
    return out


def invented_names(text: str, tracker: EntityTracker) -> list[str]:
    """Names (and years) in a generated text that occur nowhere in the document."""
    bad = []
    for cand in name_candidates(text):
        if CJK_CHAR.search(cand) and not CJK_RUN.fullmatch(cand):
            continue
        if not tracker.occurs(cand):
            if CJK_CHAR.search(cand) and len(cand) == 3 and tracker.occurs(cand[:2]):
                continue  # a two-character name the text has, with one more character after it
            bad.append(cand)
    return bad
