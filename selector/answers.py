"""Answer extraction, matching and leakage checks.

Small models state final answers in many forms (``\\boxed{}``, ``Answer:``, "the answer is", or just
a last number), often in a trace cut off by the token cap; accuracy and labels need one robust reader.

Number occurrences (extraction, leakage, canonicalization) follow one rule, ``NUMBER_RE``: ASCII
digits with an optional sign, optional thousands groups (``1,200``) and an optional decimal part.
A number is not read out of the middle of another number or identifier: it may not follow a letter,
digit, underscore or ``.`` ("3.12", "x12", "v1.2" hold no "12"/"2"), nor be followed by more digits
or by ``.digit``; letters may follow it, so units stay readable ("12kg", "12th", "3x" hold 12, 12, 3).
A sign counts only when it does not follow a word character ("3-5" holds 3 and 5; "= -5" holds -5).
Comma groups that are not valid thousands groups are separate numbers ("1,2345" holds 1 and 2345).
A whole answer (not an occurrence inside a text) may also be in scientific notation ("1.23e-04"); it is
compared with relative tolerance only, so a tiny value never matches another tiny value or 0.
"""

from __future__ import annotations

import re
from fractions import Fraction

NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?![0-9])(?!\.[0-9])")
_FULL_NUMBER_RE = re.compile(r"[-+]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")
_SCIENTIFIC_RE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_FRACTION_RE = re.compile(r"([-+]?[0-9]+(?:\.[0-9]+)?)\s*/\s*([0-9]+(?:\.[0-9]+)?)")
_ANSWER_LINE_RE = re.compile(r"\banswer\b\s*(?:\*\*|__)?\s*:[ \t]*(?:\*\*|__)?[ \t]*([^\n]*)", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\banswer\s+is\b[ \t]*:?[ \t]*([^\n]*)", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.;!?](?=\s|$)|,\s+(?=[^\W\d_])")
_BOX_COMMANDS = ("boxed", "fbox")
_TEXT_COMMANDS = ("text", "textbf", "textit", "mathrm", "mathbf", "mbox", "operatorname")
_ABS_TOL = 1e-6
_REL_TOL = 1e-9
_UNIT_SUFFIX_RE = re.compile(rf"({_FULL_NUMBER_RE.pattern})(?:\s*[%°]|\s*[^\W\d_]+|\s+[^\W\d_].*)", re.DOTALL)
_CHOICE_RE = re.compile(r"\(?([a-z])\)?|\(([a-z])\)\s.*|([a-z])[).:]\s.*", re.DOTALL)
_ASSIGNMENT_RE = re.compile(r"[a-z]\s*=\s*(.+)", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text``, or None.

    Priority: last ``\\boxed{}``, last ``Answer:`` line, last "answer is X", last number, the last
    line of a short (<= 5 words) text. A stated equation keeps its result: "Answer: 3 * 4 = 12"
    gives "12".
    """
    answer = _find_answer(text)
    if answer is not None and "=" in answer:
        answer = _clean(answer.rsplit("=", 1)[1]) or answer
    return answer


def _find_answer(text: str) -> str | None:
    for content in reversed(_command_args(text, _BOX_COMMANDS)):
        if answer := _clean(content):
            return answer
    for m in reversed(list(_ANSWER_LINE_RE.finditer(text))):
        rest = m.group(1)
        if not _clean(rest):  # "Answer:\n42": the answer sits on the next non-empty line
            rest = next((ln for ln in text[m.end() :].splitlines() if ln.strip()), "")
        if inner := _ANSWER_IS_RE.search(rest):  # "Final answer: the answer is 42."
            rest = _cut_sentence(inner.group(1))
        if answer := _clean(rest):
            return answer
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        if answer := _clean(_cut_sentence(m.group(1))):
            return answer
    numbers = NUMBER_RE.findall(text.replace("−", "-"))
    if numbers:
        return numbers[-1]
    if len(text.split()) <= 5:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and (answer := _clean(lines[-1])):
            return answer
    return None


def normalize_answer(answer: str) -> str:
    """Canonical form for comparison; idempotent (applied until nothing changes)."""
    prev = None
    for _ in range(20):
        if answer == prev:
            break
        prev, answer = answer, _normalize_once(answer)
    return answer


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer equals the gold one (text, number, number+unit, or letter choice)."""
    if predicted is None:
        return False
    p, g = normalize_answer(predicted), normalize_answer(gold)
    if p == g:
        return True
    g_num = _to_number(g)
    candidates = [p]
    if m := _ASSIGNMENT_RE.fullmatch(p):  # "x = 5"
        candidates.append(m.group(1).strip())
    for cand in candidates:
        if cand == g:
            return True
        if g_num is not None:
            c_num = _to_number(cand)
            if c_num is None and (m := _UNIT_SUFFIX_RE.fullmatch(cand)):  # "42 apples", "50%"
                c_num = _to_number(m.group(1))
            scientific = bool(_SCIENTIFIC_RE.fullmatch(cand.strip()) or _SCIENTIFIC_RE.fullmatch(g.strip()))
            if c_num is not None and _close(c_num, g_num, relative_only=scientific):
                return True
    choice = _choice_letter(g)
    return choice is not None and _choice_letter(p) == choice


def contains_answer(text: str, gold: str) -> bool:
    """Whether ``text`` already states ``gold`` (answer leakage into the reasoning).

    A numeric gold matches any number occurrence in the text with the same value (see the module
    docstring for what counts as an occurrence); any gold also matches as a case-insensitive whole
    word/phrase of its normalized form. A single-letter gold ("B") thus matches a standalone "b".
    """
    if not gold or not gold.strip():
        raise ValueError("gold answer is empty")
    g = normalize_answer(gold)
    if not g:
        raise ValueError(f"gold answer {gold!r} is empty once normalized")
    g_num = _to_number(g)
    if g_num is not None:
        for m in NUMBER_RE.finditer(text.replace("−", "-")):
            if _close(_to_number(m.group(0)), g_num):
                return True
    if g_num is None or _FRACTION_RE.fullmatch(g):  # a plain number was fully checked above
        pattern = re.compile(r"(?<!\w)" + re.escape(g) + r"(?!\w)")
        flat = " ".join(text.lower().split())
        if pattern.search(flat) or pattern.search(normalize_answer(text)):
            return True
    return False


# --------------------------------------------------------------------------- helpers


def _command_args(text: str, names: tuple[str, ...]) -> list[str]:
    """Contents of every balanced ``\\name{...}`` in ``text``, in order (unclosed ones skipped)."""
    out = []
    pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*\{")
    for m in pattern.finditer(text):
        end = _closing_brace(text, m.end())
        if end is not None:
            out.append(text[m.end() : end])
    return out


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing a group whose content starts at ``start``; escaped braces skipped."""
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _unwrap(text: str, names: tuple[str, ...]) -> str:
    """Replace each balanced ``\\name{X}`` with X."""
    pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*\{")
    while m := pattern.search(text):
        end = _closing_brace(text, m.end())
        if end is None:
            break
        text = text[: m.start()] + text[m.end() : end] + text[end + 1 :]
    return text


def _unwrap_fracs(text: str) -> str:
    r"""``\frac{a}{b}`` -> ``a/b`` (parenthesized when a part is not a single term)."""
    pattern = re.compile(r"\\[dt]?frac\s*\{")
    while m := pattern.search(text):
        num_end = _closing_brace(text, m.end())
        if num_end is None or num_end + 1 >= len(text) or text[num_end + 1] != "{":
            break
        den_end = _closing_brace(text, num_end + 2)
        if den_end is None:
            break
        parts = [text[m.end() : num_end].strip(), text[num_end + 2 : den_end].strip()]
        a, b = (p if re.fullmatch(r"[-\w.]*", p) else f"({p})" for p in parts)
        text = text[: m.start()] + f"{a}/{b}" + text[den_end + 1 :]
    return text


def _cut_sentence(rest: str) -> str:
    """The answer phrase up to the end of its sentence or clause ("42, since ..." -> "42")."""
    end = _SENTENCE_END_RE.search(rest)
    return rest[: end.start()] if end else rest


def _clean(answer: str) -> str:
    """Strip the wrapping a model puts around an answer: spaces, ``$``, ``**``, trailing ``.``."""
    answer = _unwrap(answer, _TEXT_COMMANDS)
    prev = None
    while answer != prev:
        prev = answer
        answer = answer.strip()
        for wrap in ("**", "__", "$", "\\(", "\\)", "\\[", "\\]"):
            answer = answer.removeprefix(wrap).removesuffix(wrap)
        answer = answer.rstrip(".")
    return answer


def _normalize_once(answer: str) -> str:
    s = answer.replace("−", "-").replace("\\%", "%").replace("\\!", "").replace("\\,", "")
    s = _unwrap(s, _BOX_COMMANDS + _TEXT_COMMANDS)
    s = _unwrap_fracs(s)
    s = s.replace("$", "").replace("**", "").replace("\\(", "").replace("\\)", "")
    s = s.lower()
    s = NUMBER_RE.sub(lambda m: _canonical_number(m.group(0)), s)
    s = " ".join(s.split())
    return s.rstrip(".,;:!? ").strip()


def _canonical_number(token: str) -> str:
    value = Fraction(token.replace(",", ""))
    if value == 0:
        return "0"
    text = token.replace(",", "").lstrip("+")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-").lstrip("0")
    if digits.startswith(".") or not digits:
        digits = "0" + digits
    return sign + digits


def _to_number(s: str) -> Fraction | None:
    """The exact value of a string that is a single number (``1,200``, ``-0.5``, ``1.23e-04``) or a simple
    fraction ``a/b``. Scientific notation counts only as a whole answer, never inside a text."""
    s = s.strip()
    if _FULL_NUMBER_RE.fullmatch(s):
        return Fraction(s.replace(",", ""))
    if _SCIENTIFIC_RE.fullmatch(s):
        return Fraction(s)
    if (m := _FRACTION_RE.fullmatch(s)) and Fraction(m.group(2)) != 0:
        return Fraction(m.group(1)) / Fraction(m.group(2))
    return None


def _close(a: Fraction, b: Fraction, relative_only: bool = False) -> bool:
    """Equal within tolerance; two integers must be equal exactly (tolerance is for decimal rounding).

    Exact arithmetic, so huge numbers never overflow or collapse into false matches. With
    ``relative_only`` (a side written in scientific notation, where values like 1e-22 are meant) the
    absolute tolerance is off, so a tiny answer never matches another tiny number or 0.
    """
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    relative = Fraction(_REL_TOL) * max(abs(a), abs(b))
    return abs(a - b) <= (relative if relative_only else max(Fraction(_ABS_TOL), relative))


def _choice_letter(s: str) -> str | None:
    m = _CHOICE_RE.fullmatch(s)
    return next((g for g in m.groups() if g), None) if m else None
