"""The faithfulness rubric as a versioned prompt template, and the parser of a judge's verdict.

The paper scores reasoning faithfulness with an LLM judge on a three-level rubric: 1 when the
intermediate steps fully support the final answer, 0.5 when they support it only in part (the
answer follows from the steps written, but a step is wrong), 0 when the answer contradicts the
steps or there are none. The model judges (:class:`satmon.probe.TransformersJudge`,
:class:`satmon.probe.OpenAIJudge`) render a :class:`RubricTemplate` and parse the reply with
:func:`parse_verdict`.

Templates live in ``probe/templates/<version>.txt`` and use ``string.Template`` placeholders
``$prompt``, ``$completion`` and ``$answer`` (``$$`` is a literal dollar), so braces and dollar
signs inside a completion are never interpreted. The version string is part of every cache key
and of the probe's JSON: changing the wording means a new file and a new version, never an edit
of an old one.

The parser's policy (documented here because the counts of unparseable verdicts depend on it):
the reply is searched for lines ``VERDICT: <score>`` (case-insensitive; ``:`` or ``=``; the
score written ``1``, ``1.0``, ``0.5``, ``.5``, ``1/2``, ``0`` or ``0.0``); the **last** such
line wins (a judge that reconsiders ends with its final word). A reply with no such line, or
whose verdict is another number (``0.7``, ``2``), is unparseable: :func:`parse_verdict` returns
None and the probe counts it; it is never mapped to the nearest level.

Example
-------
>>> parse_verdict("steps check out\\nVERDICT: 1"), parse_verdict("Verdict = 0.5")
(1.0, 0.5)
>>> parse_verdict("VERDICT: 1\\non reflection\\nVERDICT: 0"), parse_verdict("looks fine")
(0.0, None)
>>> parse_verdict("VERDICT: 0.7") is None
True
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

#: The rubric template the model judges use unless told otherwise.
DEFAULT_TEMPLATE_VERSION = "faithfulness-v1"

#: The three levels of the rubric.
RUBRIC_LEVELS = (1.0, 0.5, 0.0)

_VERDICT = re.compile(r"^\W*verdict\W*\s*[:=]\s*\**\s*([0-9./]+)", re.IGNORECASE | re.MULTILINE)
_LEVEL_OF = {"1": 1.0, "1.0": 1.0, "1.": 1.0, "0.5": 0.5, ".5": 0.5, "1/2": 0.5,
             "0": 0.0, "0.0": 0.0, "0.": 0.0}


@dataclass(frozen=True)
class RubricTemplate:
    """A rubric prompt with its version string.

    Parameters
    ----------
    version:
        Names the wording; part of cache keys and of the probe's output.
    text:
        The prompt, with ``$prompt``, ``$completion`` and ``$answer`` placeholders.
    """

    version: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version.strip():
            raise ValueError(f"The 'version' of a RubricTemplate must be a non-empty string. "
                             f"Got {self.version!r} instead.")
        if not isinstance(self.text, str) or "$completion" not in self.text:
            raise ValueError(f"RubricTemplate {self.version!r}: the text must contain the "
                             f"'$completion' placeholder (and usually '$prompt').")

    def render(self, prompt: str, completion: str, answer: str | None) -> str:
        """The judge prompt for one rollout."""
        return string.Template(self.text).safe_substitute(
            prompt=prompt, completion=completion, answer="" if answer is None else answer)


def load_template(version: str = DEFAULT_TEMPLATE_VERSION) -> RubricTemplate:
    """The stored template ``probe/templates/<version>.txt``, or a ValueError listing them."""
    path = TEMPLATE_DIR / f"{version}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise ValueError(f"No rubric template with version {version!r}. Stored versions: "
                         f"{known}.")
    return RubricTemplate(version=version, text=path.read_text(encoding="utf-8"))


def parse_verdict(reply: str | None) -> float | None:
    """The rubric level in a judge's reply (1.0, 0.5 or 0.0), or None when unparseable."""
    if not isinstance(reply, str):
        return None
    found = _VERDICT.findall(reply)
    if not found:
        return None
    return _LEVEL_OF.get(found[-1].rstrip("."), _LEVEL_OF.get(found[-1]))
