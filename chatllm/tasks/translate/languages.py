"""The languages `chatllm translate` knows by code and name, the script that gives each away, and glossaries."""

from __future__ import annotations

from dataclasses import dataclass

from chatllm.errors import UsageError
from chatllm.tasks.text.text_rules import guess_language

# code: (English name, other names it is known by, script of its writing or None for Latin)
LANGUAGES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "en": ("English", ("英语", "英文", "eng", "anglais", "englisch"), None),
    "zh": ("Chinese", ("中文", "汉语", "漢語", "简体中文", "zh-cn", "zh-hans", "zho", "chi", "mandarin",
                       "simplified chinese", "chinese (simplified)"), "Chinese"),
    "ja": ("Japanese", ("日本語", "日语", "jpn", "jp"), "Japanese"),
    "ko": ("Korean", ("한국어", "韩语", "kor"), "Korean"),
    "fr": ("French", ("français", "francais", "法语", "fra", "fre"), None),
    "de": ("German", ("deutsch", "德语", "deu", "ger"), None),
    "es": ("Spanish", ("español", "espanol", "西班牙语", "spa"), None),
    "it": ("Italian", ("italiano", "意大利语", "ita"), None),
    "pt": ("Portuguese", ("português", "portugues", "葡萄牙语", "por"), None),
    "nl": ("Dutch", ("nederlands", "荷兰语", "nld"), None),
    "ru": ("Russian", ("русский", "俄语", "rus"), "Russian"),
    "ar": ("Arabic", ("العربية", "阿拉伯语", "ara"), "Arabic"),
    "hi": ("Hindi", ("हिन्दी", "印地语", "hin"), "Hindi"),
    "el": ("Greek", ("ελληνικά", "希腊语", "ell"), "Greek"),
    "he": ("Hebrew", ("עברית", "希伯来语", "heb"), "Hebrew"),
    "th": ("Thai", ("ไทย", "泰语", "tha"), "Thai"),
    "vi": ("Vietnamese", ("tiếng việt", "越南语", "vie"), None),
    "id": ("Indonesian", ("bahasa indonesia", "印尼语", "ind"), None),
    "tr": ("Turkish", ("türkçe", "turkce", "土耳其语", "tur"), None),
    "pl": ("Polish", ("polski", "波兰语", "pol"), None),
    "sv": ("Swedish", ("svenska", "瑞典语", "swe"), None),
    "uk": ("Ukrainian", ("українська", "乌克兰语", "ukr"), "Russian"),
}


@dataclass(frozen=True)
class Language:
    """A language the translator knows: its code, its English name, and the script that gives it away."""

    code: str
    name: str
    script: str | None  # a name in chatllm.tasks.text.text_rules.SCRIPTS, or None for the Latin alphabet


def resolve_language(value: str) -> Language:
    """A language from a code or a name in English or in itself (zh, Chinese, 中文); UsageError lists the known ones."""
    key = value.strip().lower().replace("_", "-")
    for code, (name, aliases, script) in LANGUAGES.items():
        if key in (code, name.lower()) or key in aliases or key.split("-")[0] == code and len(key) <= 7:
            return Language(code, name, script)
    known = ", ".join(f"{code} ({name})" for code, (name, _, _) in LANGUAGES.items())
    raise UsageError(f"unknown language {value!r}", f"use a code or a name: {known}")


def detect_source(sample: str) -> Language | None:
    """The input's language when its script gives it away (Chinese, Japanese, Russian...); None for Latin text."""
    name = guess_language(sample)
    if name is None:
        return None
    for code, (lang, _, script) in LANGUAGES.items():
        if lang == name:
            return Language(code, lang, script)
    return None


def parse_glossary(text: str, name: str = "the glossary") -> list[tuple[str, str]]:
    """(term, translation) pairs from TSV lines `term<TAB>translation`; blank lines and # comments are skipped."""
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) < 2 or not cells[0].strip() or not cells[1].strip():
            raise UsageError(f"{name}, line {n}: expected `term<TAB>translation`, got {line.strip()[:60]!r}",
                             "write one term a line, a tab, then its translation")
        pairs.append((cells[0].strip(), cells[1].strip()))
    return pairs
