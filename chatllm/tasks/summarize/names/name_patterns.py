"""What a name looks like, without the model: stop words and titles, capitalised runs in English, CJK surnames,
name endings and n-grams in Chinese, and the candidates for a name in any text."""

from __future__ import annotations

import collections
import re
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
CJK_RUN = re.compile(rf"[{_CJK}]+(?:[A-Z][{_CJK}]*)*|[A-Z](?=[{_CJK}])[{_CJK}A-Z]*")
_WORD = r"(?:(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Capt|Col|Gen|Prof|Rev|Mt|[A-Z])\.|[A-Z][\w'\u2019-]*)"
# A run of capitalised words, "of"/"the" allowed inside it ("Palace of Green Porcelain"), single spaces only.
_CAP_RUN = re.compile(rf"(?<![\w'\u2019]){_WORD}(?:[ ](?:(?:of|the|de|van|von|da|la|le|du)[ ])?{_WORD})*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\u201c\u2018\"'(\[\n\u2014-])\s*$")
_LATIN = "A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"
ALL_WORDS = re.compile(rf"[{_LATIN}]+(?:['\u2019][{_LATIN}]+)?")
YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")
CJK_CHAR = re.compile(rf"[{_CJK}]")


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
    for run in CJK_RUN.findall(text):
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


def suppress_substrings(counts: dict[str, int]) -> dict[str, int]:
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


def name_candidates(text: str) -> list[str]:
    """What in a generated text looks like a name or a date: capitalised runs, CJK name patterns, years.

    A single capitalised word that starts a sentence is left out unless the text also writes it mid-sentence: it
    is far more often an ordinary word ("Overall", "Summary").
    """
    runs = capitalised_runs(text)
    mid = {core(r) for r, initial in runs if not initial}
    out = [r for r, initial in runs if not initial or " " in r or core(r) in mid]
    for run in CJK_RUN.findall(text):
        out += _cjk_name_candidates(run, text)
    out += YEAR.findall(text)
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
