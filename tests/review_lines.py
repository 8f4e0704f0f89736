"""Short review lines for label tests that need many texts (written here: no dataset is needed to run the tests)."""

from __future__ import annotations

THINGS = ["The plot", "The acting", "The soundtrack", "The ending", "The dialogue", "The pacing", "The camera work",
          "The lead actor", "The script", "The final battle"]
OPINIONS = ["is a joy from start to finish", "drags on and goes nowhere", "feels fresh and surprisingly moving",
            "is dull, predictable and far too long", "is fine, I suppose, if a little uneven"]
WHERE = ["", " on the big screen", " the second time around", " for a film of this budget"]


def review_lines(n: int) -> list[str]:
    """n distinct one-line reviews, praise, complaints and shrugs mixed in a fixed order."""
    lines = [f"{thing} {opinion}{where}." for where in WHERE for i, opinion in enumerate(OPINIONS)
             for thing in THINGS[i:] + THINGS[:i]]
    if n > len(lines):
        raise ValueError(f"only {len(lines)} review lines")
    return lines[:n]
