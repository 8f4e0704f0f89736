"""The names a document is about, found without the model: capitalised runs in English, proper-noun n-grams in Chinese.

A model of 135M parameters forgets or scrambles names between map-reduce levels; counting does not. Entities are
ranked by how often they occur and how widely they are spread over the document's segments (its chunks), and a
document index (its words, numbers and CJK bigrams) says whether a name in a summary occurs in the text at all.
Everything here works on a stream of segments, so memory stays bounded however long the input is.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Iterable

# Words that are capitalised for grammar, not because they name something (checked lowercased).
STOP_WORDS = frozenset("""
a an the and or but nor so yet for of in on at to by with from into onto upon over under about above below after
before since until while when whenever where wherever why how what which who whom whose whoever whatever this that
these those there here then than thus hence now once also still even just only very too again ever never always
often perhaps maybe indeed later soon next suddenly finally afterwards today tomorrow tonight yesterday
however therefore meanwhile moreover nevertheless otherwise instead besides although though
because if unless whether else not no yes oh ah well why now alas hullo hello hallo dear good poor ay aye
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves one ones someone somebody something anyone anybody anything everyone
everybody everything nobody nothing none each every all both either neither some any many much more most few less
least other others another such same own let lets do does did done be is am are was were been being have has had
having shall should will would may might must can could said says say tell told ask asked see saw look come go went
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august september
october november december spring summer autumn winter
mr mrs ms miss dr doctor sir madam madame lady lord mister master captain professor prof st saint
uncle aunt father mother brother sister sen rev
chapter part book volume section page table figure appendix contents introduction preface note notes index
first second third fourth fifth sixth seventh eighth ninth tenth last next
ii iii iv v vi vii viii ix x xi xii xiii xiv xv xvi xvii xviii xix xx
english french german project gutenberg ebook ebooks license copyright
""".split())
TITLES = frozenset("mr mrs ms miss dr doctor sir madam lady lord captain professor st saint uncle aunt".split())
NAME_STOPS = STOP_WORDS - TITLES  # what is dropped from a run's start: a title there belongs to the name
CONNECTORS = frozenset("of the de van von da la le du".split())

# Characters that rarely sit inside a Chinese name: particles, pronouns, common verbs and adverbs.
CJK_FUNCTION = frozenset(
    "的了是不一在有人这也而说然上里去便得又个着没于为但道以么我想要到出还见自那时们才很都看之只却你知下面起和可走后些且"
    "回因过己所似并什进就乎第正两本样将多从几好心做听经已此先现用虽无其对再定发地候近别总间忽满事中呢使如放动许者开"
    "更同或倒能全罢谁会至足儿口早刻她它吗吧啊呀哪怎每被把让给向跟与及等当该很最还每已被您咱俺啦嘛哩呵哈唉哦喂嗯"
)
CJK_COMMON_WORDS = frozenset("大家 东西 女人 男人 孩子 时光 今天 明天 昨天 先生 太太 老头 大概 大约 一点 许多".split())
CJK_SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章云苏潘葛奚范彭郎鲁韦昌马苗凤花方"
    "俞任袁柳鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬安常乐于时傅皮卞齐康伍余元卜顾孟平黄和穆萧尹姚邵湛汪祁毛禹狄米贝明臧"
    "计伏成戴谈宋茅庞熊纪舒屈项祝董梁杜阮蓝闵席季麻强贾路娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍虞万支柯管卢莫"
    "阿小老"
)
CJK_NAME_FOLLOW = frozenset("说是的和在把被对向给也就却又便都很要去来打道问笑叫想看听与跟从，。！？；：、”’）")
# 子 is left out: it ends far more common nouns (辫子, 样子, 老头子) than names.
CJK_NAME_SUFFIXES = tuple("爷妈婶嫂哥姐公婆娘叔伯翁氏庄村城镇县府祠庙寺山河湖街店馆院部局会社党国省州")
CJK_NAME_ENDINGS = ("先生", "老爷", "太爷", "太太", "夫人", "秀才", "举人", "尼姑", "和尚", "公司", "大学", "政府", "委员会")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(rf"[{_CJK}]+(?:[A-Z][{_CJK}]*)*|[A-Z](?=[{_CJK}])[{_CJK}A-Z]*")
_WORD = r"(?:(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Capt|Col|Gen|Prof|Rev|Mt|[A-Z])\.|[A-Z][\w'\u2019-]*)"
# A run of capitalised words, "of"/"the" allowed inside it ("Palace of Green Porcelain"), single spaces only.
_CAP_RUN = re.compile(rf"(?<![\w'\u2019]){_WORD}(?:[ ](?:(?:of|the|de|van|von|da|la|le|du)[ ])?{_WORD})*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\u201c\u2018\"'(\[\n\u2014-])\s*$")
_LATIN = "A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"
_ALL_WORDS = re.compile(rf"[{_LATIN}]+(?:['\u2019][{_LATIN}]+)?")
_YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")
CJK_CHAR = re.compile(rf"[{_CJK}]")
MAX_TRACKED = 200_000  # distinct candidates kept; rare ones are pruned past this, bounding memory on huge inputs


def clean_word(word: str) -> str:
    return re.sub(r"(?:['\u2019](?:s|ll|m|ve|d|re|t)|['\u2019])$", "", word)


def capitalised_runs(text: str) -> list[tuple[str, bool]]:
    """Runs of capitalised words as (run, starts_a_sentence), stop words trimmed from both ends."""
    out = []
    for m in _CAP_RUN.finditer(text):
        words = [clean_word(w) for w in m.group().split(" ")]
        initial = bool(_SENTENCE_START.search(text[max(0, m.start() - 3):m.start()])) or m.start() == 0
        while words and (_is_stop(words[0], NAME_STOPS) or words[0].lower() in CONNECTORS):
            words.pop(0)
            initial = False  # what is left no longer starts the sentence
        while words and (_is_stop(words[-1], STOP_WORDS) or words[-1].lower() in CONNECTORS):
            words.pop()
        if not words or all(w.lower().rstrip(".") in TITLES for w in words):
            continue
        if len(words) == 1 and len(words[0].rstrip(".")) < 2:
            continue  # an initial, or "I"
        out.append((" ".join(words), initial))
    return out


def _is_stop(word: str, stops: frozenset) -> bool:
    """A stop word, or a compound that starts with one ("Well-known", "Gutenberg-tm"; a title may: "Saint-Exupery")."""
    low = word.lower().rstrip(".")
    return low in stops or ("-" in low and low.split("-", 1)[0] in NAME_STOPS)


def core(name: str) -> str:
    """A name without its titles, lowercased: "Dr. Mortimer" and "Mortimer" share the core "mortimer"."""
    words = [w for w in name.split() if w.lower().rstrip(".") not in TITLES]
    return " ".join(words or name.split()).lower()


def cjk_ngrams(text: str, sizes: Iterable[int] = (2, 3, 4)) -> collections.Counter:
    """Counts of CJK n-grams (a capital letter may sit in them, as in 阿Q) with no function character in them."""
    counts: collections.Counter = collections.Counter()
    for run in _CJK_RUN.findall(text):
        for n in sizes:
            for i in range(len(run) - n + 1):
                gram = run[i:i + n]
                if _has_function_char(gram) or gram in CJK_COMMON_WORDS:
                    continue
                if not CJK_CHAR.search(gram) or (gram[0].isascii() and gram[-1].isascii()):
                    continue
                counts[gram] += 1
    return counts


def _has_function_char(gram: str) -> bool:
    """Whether a CJK n-gram holds a function character outside a title (才 is one, but 秀才 and 举人 end names)."""
    for ending in CJK_NAME_ENDINGS:
        gram = gram.replace(ending, "\u3000")
    return any(ch in CJK_FUNCTION for ch in gram)


def _suppress_substrings(counts: dict[str, int]) -> dict[str, int]:
    """Drop an n-gram that is mostly part of one longer one (赵太 inside 赵太爷)."""
    keep = dict(counts)
    for gram, n in sorted(counts.items(), key=lambda kv: -len(kv[0])):
        if len(gram) < 3 or gram not in keep:
            continue
        for size in range(2, len(gram)):
            for i in range(len(gram) - size + 1):
                sub = gram[i:i + size]
                if sub in keep and keep[sub] <= n * 1.25:
                    del keep[sub]
    return keep


def cjk_name_shape(gram: str) -> float:
    """How much an n-gram looks like a proper noun: a surname first, a person or place suffix last, a letter in it."""
    shape = 1.0
    if gram[0] in CJK_SURNAMES:
        shape += 1
    if gram.endswith(CJK_NAME_ENDINGS) or gram[-1] in CJK_NAME_SUFFIXES:
        shape += 1
    if any(ch.isascii() for ch in gram):
        shape += 1
    return shape


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
        from chatllm.tasks.relations import KinshipIndex  # here: relations reads this module's name patterns

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
        for word in _ALL_WORDS.findall(text):
            low = word.lower()
            self.words.add(clean_word(low))
            if word[0].islower():
                self.lower[low] += 1
        self.years.update(_YEAR.findall(text))
        grams = cjk_ngrams(text)
        for run in _CJK_RUN.findall(text):
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
        found += [(n * cjk_name_shape(g) / 2, g) for g, n in _suppress_substrings(common).items()]
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
        for gram, count in _suppress_substrings(cjk).items():
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
        if _YEAR.fullmatch(name):
            return name in self.years
        for run in _CJK_RUN.findall(name):
            if len(run) >= 2 and not all(run[i:i + 2] in self.bigrams for i in range(len(run) - 1)):
                return False
        return all(clean_word(w.lower()) in self.words for w in _ALL_WORDS.findall(name) if not CJK_CHAR.search(w))


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


def name_candidates(text: str) -> list[str]:
    """What in a generated text looks like a name or a date: capitalised runs, CJK name patterns, years.

    A single capitalised word that starts a sentence is left out unless the text also writes it mid-sentence: it
    is far more often an ordinary word ("Overall", "Summary").
    """
    runs = capitalised_runs(text)
    mid = {core(r) for r, initial in runs if not initial}
    out = [r for r, initial in runs if not initial or " " in r or core(r) in mid]
    for run in _CJK_RUN.findall(text):
        out += _cjk_name_candidates(run, text)
    out += _YEAR.findall(text)
    return list(dict.fromkeys(out))


def _cjk_name_candidates(run: str, text: str) -> list[str]:
    """CJK substrings shaped like a name: a surname (or 阿/小/老) at a run start or after a particle, then 1-2 characters
    and a character that usually follows a name."""
    out = []
    for i, ch in enumerate(run):
        if ch not in CJK_SURNAMES or (i and run[i - 1] not in CJK_NAME_FOLLOW and run[i - 1] not in CJK_FUNCTION):
            continue
        for n in (2, 3):
            name = run[i:i + n]
            after = run[i + n] if i + n < len(run) else "。"
            if len(name) == n and after in CJK_NAME_FOLLOW and not any(c in CJK_FUNCTION for c in name[1:]):
                out.append(name)
                break
    return out


def invented_names(text: str, tracker: EntityTracker) -> list[str]:
    """Names (and years) in a generated text that occur nowhere in the document."""
    bad = []
    for cand in name_candidates(text):
        if CJK_CHAR.search(cand) and not _CJK_RUN.fullmatch(cand):
            continue
        if not tracker.occurs(cand):
            if CJK_CHAR.search(cand) and len(cand) == 3 and tracker.occurs(cand[:2]):
                continue  # a two-character name the text has, with one more character after it
            bad.append(cand)
    return bad
