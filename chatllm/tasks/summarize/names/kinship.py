"""Family ties a generated sentence states ("her uncle Darcy", "阿Q的哥哥小D"), checked against the document's own text.

A small model scrambles who is whose relative: every name is real, so the invented-name check passes, but "Darcy is
her uncle" is false. The document is read once: for every kinship word it writes, the names within a few words of it
are kept. A generated tie between a kinship word and a name is believed only when the document has that word that
close to that name somewhere. Closeness is weaker than a parse ("his sister Georgiana Darcy" backs "sister Darcy"),
and it cannot see which way a tie points ("A是B的儿子" passes where the text says "B是A的儿子"), but it never
rejects a tie the document states in so many words, and it costs one pass over the text.
"""

from __future__ import annotations

import collections
import re

from chatllm.tasks.summarize.names.name_patterns import CJK_CHAR, NAME_STOPS, TITLES, clean_word, name_candidates

KIN_EN = frozenset("""
father mother son daughter brother sister uncle aunt nephew niece cousin wife husband grandfather grandmother
grandson granddaughter stepfather stepmother stepson stepdaughter fiance fiancee fiancé fiancée widow widower
""".split())
KIN_ZH = (
    "父亲 母亲 爸爸 妈妈 儿子 女儿 哥哥 姐姐 弟弟 妹妹 叔叔 伯伯 舅舅 姑姑 姑妈 阿姨 姨妈 妻子 丈夫 老婆 侄子 侄女 外甥 "
    "表哥 表姐 表弟 表妹 堂兄 堂弟 爷爷 奶奶 祖父 祖母 孙女 女婿 儿媳 未婚妻 未婚夫"
).split()
WINDOW_WORDS = 4  # how near a kinship word a name must be written in the document to be tied to it
WINDOW_CJK = 6  # the same, in CJK characters
_KIN_EN_RE = "|".join(sorted(KIN_EN, key=len, reverse=True))
_KIN_ZH_RE = "|".join(sorted(KIN_ZH, key=len, reverse=True))
_WORDS = re.compile(r"[\w'\u2019.-]+")
_DET = r"(?:his|her|their|its|the|a|an|[A-Z][\w]*['\u2019]s)"
_CAP = r"[A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*)*"
# "her uncle Darcy", "Elizabeth's sisters Jane": the kinship word before the name it describes
_KIN_THEN_NAME = re.compile(rf"\b((?i:{_KIN_EN_RE}))s?\s+({_CAP})")
# "Darcy is her uncle", "Darcy, her uncle", "Darcy was the youngest sister"
_NAME_THEN_KIN = re.compile(rf"({_CAP})(?:,|\s+(?:is|was|becomes|became))\s+{_DET}\s+(?:[\w'\u2019]+\s+)?({_KIN_EN_RE})s?\b")
_ZH_CLAIM = re.compile(rf"({_KIN_ZH_RE})|是[^，。！？；]{{0,6}}?的?({_KIN_ZH_RE})")


class KinshipIndex:
    """Which names the document writes near each kinship word; one pass, bounded by the text's kinship mentions."""

    def __init__(self) -> None:
        self.near: dict[str, set[str]] = collections.defaultdict(set)

    def observe(self, text: str) -> None:
        """Remember the names written near each kinship word of one piece of the document."""
        words = _WORDS.findall(text)
        for i, word in enumerate(words):
            kin = _kin(word)
            if kin:
                for other in words[max(0, i - WINDOW_WORDS): i + WINDOW_WORDS + 1]:
                    if other[:1].isupper():
                        self.near[kin].add(clean_word(other.rstrip(".").lower()))
        for m in re.finditer(_KIN_ZH_RE, text):
            around = text[max(0, m.start() - WINDOW_CJK): m.start()] + "|" + text[m.end(): m.end() + WINDOW_CJK]
            self.near[m.group()].update(around[i:i + 2] for i in range(len(around) - 1))

    def unstated(self, sentence: str) -> list[str]:
        """The ties the sentence states between a kinship word and a name that the document never writes near each other."""
        return [f"{kin} {name}" for kin, name in claims(sentence) if not self._backed(kin, name)]

    def _backed(self, kin: str, name: str) -> bool:
        near = self.near.get(kin, set())
        if CJK_CHAR.search(name):
            return any(name[i:i + 2] in near for i in range(max(1, len(name) - 1)))
        parts = [w.rstrip(".").lower() for w in name.split()]
        parts = [w for w in parts if w not in TITLES and w not in NAME_STOPS] or parts
        return any(part in near for part in parts)


def _kin(word: str) -> str:
    low = word.lower().rstrip(".'\u2019")
    if low in KIN_EN:
        return low
    return low[:-1] if low.endswith("s") and low[:-1] in KIN_EN else ""


def claims(sentence: str) -> list[tuple[str, str]]:
    """(kinship word, name) pairs the sentence ties together, English and Chinese."""
    out = []
    for m in _KIN_THEN_NAME.finditer(sentence):
        if name := _trim(m.group(2)):
            out.append((m.group(1).lower(), name))
    for m in _NAME_THEN_KIN.finditer(sentence):
        if name := _trim(m.group(1)):
            out.append((m.group(2).lower(), name))
    if CJK_CHAR.search(sentence):
        cjk_names = [n for n in name_candidates(sentence) if CJK_CHAR.search(n)]
        for m in _ZH_CLAIM.finditer(sentence):
            kin = m.group(1) or m.group(2)
            if m.group(1):  # the kinship word, then the name it names: 哥哥小D
                after = sentence[m.end():]
                named = [n for n in name_candidates(after) if CJK_CHAR.search(n) and after.startswith(n)]
                if not named and re.match(r"[阿小老][A-Z]", after):
                    named = [after[:2]]  # 小D, 阿Q: a name whatever follows it
                out += [(kin, n) for n in named]
            else:  # the name, 是, then the kinship word: 小D是他的哥哥
                out += [(kin, n) for n in cjk_names if sentence[:m.start()].endswith(n)]
    return list(dict.fromkeys(out))


def _trim(run: str) -> str:
    """A capitalised run without the stop words a sentence start or a title case gives it ("The", "Then")."""
    words = run.rstrip(".'\u2019").split()
    while words and words[0].lower() in NAME_STOPS:
        words = words[1:]
    return " ".join(words)
