"""Reading, validating and repairing SQuAD/CMRC-format JSON.

Whole-file problems (missing file, non-UTF-8 bytes, malformed JSON, wrong top-level schema) raise
:class:`~paddleqa.core.errors.DataError` naming the file, where and how to fix it. Record problems are
repaired when that is safe (answer offsets off by at most ``max_offset_shift`` characters, a UTF-8
byte-order mark, whitespace around an answer) and counted, or the record is dropped and reported
with its id, what is wrong and what to do. The input file is never modified.

Two modes: ``train`` needs answers located in the context (offsets feed the span labels);
``eval`` only needs reference texts (the CMRC metric scores texts), so offset problems there are
reported as warnings and the question is kept, exactly as the official evaluation would score it;
``predict`` needs no answers at all (an unlabeled file, such as a leaderboard's hidden test set):
answers are ignored and every question with an id, a question and a context is kept.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterable, Literal

from ..core.errors import DataError
from ..core.io import read_json

log = logging.getLogger(__name__)

Mode = Literal["train", "eval", "predict"]
ANSWER_LENGTH_BUCKETS: tuple[tuple[int, int], ...] = (
    (1, 5), (6, 10), (11, 20), (21, 30), (31, 50), (51, 100), (101, 10**9),
)


@dataclasses.dataclass
class QAExample:
    """One question with its context and reference answers (texts and character offsets)."""

    qid: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]
    title: str = ""
    context_id: str = ""


@dataclasses.dataclass
class Finding:
    """One record-level problem and what was done about it."""

    record: str
    action: Literal["repaired", "dropped", "warning"]
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.action}] {self.record}: {self.problem}"
        return text + (f" -- {self.fix}" if self.fix else "")


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_examples` kept, repaired and dropped."""

    file: str
    mode: str
    questions: int = 0
    contexts: int = 0
    repaired: int = 0
    dropped: int = 0
    warnings: int = 0
    findings: list[Finding] = dataclasses.field(default_factory=list)
    answer_lengths: list[int] = dataclasses.field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        if finding.action == "repaired":
            self.repaired += 1
        elif finding.action == "dropped":
            self.dropped += 1
        else:
            self.warnings += 1
        log.debug("%s: %s", self.file, finding)

    def histogram(self) -> dict[str, int]:
        """Answer-length histogram (characters of each question's first answer)."""
        counts = collections.OrderedDict()
        for lo, hi in ANSWER_LENGTH_BUCKETS:
            label = f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"
            counts[label] = sum(lo <= n <= hi for n in self.answer_lengths)
        return dict(counts)

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "mode": self.mode,
            "questions": self.questions,
            "contexts": self.contexts,
            "repaired": self.repaired,
            "dropped": self.dropped,
            "warnings": self.warnings,
            "answer_length_histogram": self.histogram(),
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }

    def format_text(self, max_findings: int = 50) -> str:
        lines = [
            f"file: {self.file} (mode: {self.mode})",
            f"questions kept: {self.questions}",
            f"contexts: {self.contexts}",
            f"repaired: {self.repaired}   dropped: {self.dropped}   warnings: {self.warnings}",
            "answer length (chars) histogram:",
        ]
        hist = self.histogram()
        top = max(hist.values()) if hist and max(hist.values()) else 1
        for label, n in hist.items():
            lines.append(f"  {label:>8} {n:6d} {'#' * round(40 * n / top)}")
        if self.findings:
            lines.append("findings:")
            lines.extend(f"  {f}" for f in self.findings[:max_findings])
            if len(self.findings) > max_findings:
                lines.append(f"  ... and {len(self.findings) - max_findings} more (use --json for all)")
        return "\n".join(lines)


def read_squad_json(path: str | Path) -> tuple[dict[str, Any], bool]:
    """Parse a SQuAD/CMRC file; returns (document, bom_removed). Whole-file problems raise."""
    p = Path(path)
    doc, bom = read_json(p, fix="check the path (CMRC 2018: see data/README.md)")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        got = type(doc).__name__ if not isinstance(doc, dict) else f"keys {sorted(doc)[:8]}"
        raise DataError(
            p,
            f"wrong schema: expected an object with a 'data' list (SQuAD/CMRC format), got {got}",
            'the file must look like {"version": ..., "data": [{"title", "paragraphs": '
            '[{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}',
        )
    return doc, bom


def _locate(context: str, text: str, start: Any, shift: int) -> tuple[int | None, str]:
    """Find ``text`` at ``start`` or within ``shift`` characters; returns (offset, note)."""
    if isinstance(start, str) and start.strip().lstrip("-").isdigit():
        start = int(start)
    if isinstance(start, bool) or not isinstance(start, int):
        return None, f"answer_start {start!r} is not an integer"
    if 0 <= start and context.startswith(text, start):
        return start, ""
    for d in sorted(range(-shift, shift + 1), key=lambda x: (abs(x), x)):
        s = start + d
        if d and s >= 0 and context.startswith(text, s):
            return s, f"answer_start {start} -> {s}"
    return None, f"answer_start {start} does not point at the answer text"


def _record_name(obj: Any, fallback: str) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("id"), (str, int)) and str(obj["id"]).strip():
        return str(obj["id"]).strip()
    return fallback


def load_examples(
    path: str | Path,
    *,
    mode: Mode = "train",
    max_offset_shift: int = 3,
    max_context_chars: int = 5000,
    max_question_chars: int = 1000,
) -> tuple[list[QAExample], LoadReport]:
    """Read ``path``, repair what is safe, drop what is not; return examples and a report."""
    if mode not in ("train", "eval", "predict"):
        raise ValueError(f"mode must be 'train', 'eval' or 'predict', got {mode!r}")
    doc, bom = read_squad_json(path)
    report = LoadReport(file=str(path), mode=mode)
    if bom:
        report.add(Finding("file", "repaired", "UTF-8 byte-order mark removed"))
    examples: list[QAExample] = []
    seen: set[str] = set()
    fix_schema = "see data/README.md for the expected fields"

    for i, article in enumerate(doc["data"]):
        art_name = _record_name(article, f"data[{i}]")
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            report.add(Finding(art_name, "dropped", "article has no 'paragraphs' list", fix_schema))
            continue
        title = article.get("title") if isinstance(article.get("title"), str) else ""
        for j, para in enumerate(article["paragraphs"]):
            para_name = _record_name(para, f"{art_name}.paragraphs[{j}]")
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                report.add(Finding(para_name, "dropped", "paragraph has no 'qas' list", fix_schema))
                continue
            context = para.get("context")
            n_q = len(para["qas"])
            if not isinstance(context, str) or not context.strip():
                what = "empty context" if isinstance(context, str) else "missing or non-string 'context'"
                report.add(Finding(para_name, "dropped", f"{what}; its {n_q} question(s) dropped",
                                   "give the paragraph its passage text"))
                continue
            if len(context) > max_context_chars:
                report.add(Finding(
                    para_name, "dropped",
                    f"context has {len(context)} characters (> max_context_chars={max_context_chars}); "
                    f"its {n_q} question(s) dropped",
                    "split the passage into smaller paragraphs, or raise --max-context-chars "
                    "if it really is one passage",
                ))
                continue
            kept_here = 0
            for k, qa in enumerate(para["qas"]):
                qname = _record_name(qa, f"{para_name}.qas[{k}]")
                ex = _check_question(qa, qname, context, mode, max_offset_shift, max_question_chars,
                                     seen, report)
                if ex is None:
                    continue
                ex.title, ex.context_id = title, para_name
                examples.append(ex)
                seen.add(ex.qid)
                if ex.answers:
                    report.answer_lengths.append(len(ex.answers[0]))
                kept_here += 1
            report.contexts += kept_here > 0
    report.questions = len(examples)
    log.info("%s: %d questions in %d contexts; %d repaired, %d dropped, %d warnings", path,
             report.questions, report.contexts, report.repaired, report.dropped, report.warnings)
    return examples, report


def _check_question(qa: Any, qname: str, context: str, mode: str, shift: int, max_q: int,
                    seen: set[str], report: LoadReport) -> QAExample | None:
    if not isinstance(qa, dict):
        report.add(Finding(qname, "dropped", "question record is not an object"))
        return None
    qid = qa.get("id")
    if not isinstance(qid, (str, int)) or not str(qid).strip():
        report.add(Finding(qname, "dropped", "question has no 'id'", "give every question a unique id"))
        return None
    qid = str(qid).strip()
    if qid in seen:
        report.add(Finding(qid, "dropped", "duplicate question id (the first one is kept)",
                           "make question ids unique"))
        return None
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        what = "empty question" if isinstance(question, str) else "missing or non-string 'question'"
        report.add(Finding(qid, "dropped", what, "write the question text"))
        return None
    question = question.strip()
    if len(question) > max_q:
        report.add(Finding(qid, "dropped", f"question has {len(question)} characters (> {max_q})",
                           "shorten the question; questions are truncated to max_query_length tokens"))
        return None
    if mode == "predict":  # unlabeled: whatever answers the record has are not needed
        return QAExample(qid=qid, question=question, context=context, answers=[], answer_starts=[])
    answers = qa.get("answers")
    if not isinstance(answers, list) or not answers:
        report.add(Finding(qid, "dropped", "no 'answers' list (extractive QA needs at least one answer)",
                           'add "answers": [{"text": ..., "answer_start": ...}]'))
        return None
    texts: list[str] = []
    starts: list[int] = []
    problems: list[str] = []
    for a_idx, ans in enumerate(answers):
        aname = f"answers[{a_idx}]"
        text = ans.get("text") if isinstance(ans, dict) else None
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{aname} has an empty or missing 'text'")
            continue
        s0 = ans.get("answer_start")
        start, note = _locate(context, text, s0, shift)
        if start is None and text != text.strip() and isinstance(s0, int):
            lead = len(text) - len(text.lstrip())
            start2, _ = _locate(context, text.strip(), s0 + lead, shift)
            if start2 is not None:
                text, start, note = text.strip(), start2, "whitespace stripped from answer text"
        if start is None:
            where = list(_all_offsets(context, text))[:5]
            found = f"the text occurs at offsets {where}" if where else "the text is not in the context"
            if mode == "eval":
                # Scoring needs only the text. CMRC dev's extra references carry answer_start -1
                # ("no offset"), which is not a problem; a wrong real offset is worth a warning.
                if not (s0 == -1 or s0 is None):
                    report.add(Finding(qid, "warning", f"{aname} {text!r}: {note}; {found} "
                                       "(kept: scoring uses the text)", "correct answer_start"))
                texts.append(text)
                starts.append(where[0] if where else -1)
            else:
                problems.append(f"{aname} {text!r}: {note}; {found}")
            continue
        if note:
            report.add(Finding(qid, "repaired", f"{aname} {note}"))
        texts.append(text)
        starts.append(start)
    fix = "correct answer_start (or the text) so they match the context"
    if not texts:
        report.add(Finding(qid, "dropped", "no usable answer: " + "; ".join(problems), fix))
        return None
    for problem in problems:
        report.add(Finding(qid, "warning", problem + " (answer ignored, question kept)", fix))
    return QAExample(qid=qid, question=question, context=context, answers=texts, answer_starts=starts)


def _all_offsets(context: str, text: str) -> Iterable[int]:
    i = context.find(text)
    while i != -1:
        yield i
        i = context.find(text, i + 1)


def references(examples: Iterable[QAExample]) -> dict[str, list[str]]:
    """Question id -> reference texts, for :func:`paddleqa.core.metrics.cmrc_scores`."""
    return {ex.qid: list(ex.answers) for ex in examples}


@dataclasses.dataclass
class GoldQuestion:
    """One question of a gold file as the official script reads it (nothing repaired or dropped)."""

    qid: str
    question: str
    context: str
    references: list[str]


def gold_questions(path: str | Path) -> list[GoldQuestion]:
    """Every question of a gold file, straight from the JSON, as the official script reads it.

    Every question counts (none is dropped), so scores match the official evaluation; questions
    whose record is unusable get an empty reference list (and can only score 0).
    """
    doc, _ = read_squad_json(path)
    out: list[GoldQuestion] = []
    for article in doc["data"]:
        for para in (article.get("paragraphs") or []) if isinstance(article, dict) else []:
            context = para.get("context") if isinstance(para, dict) else None
            for qa in (para.get("qas") or []) if isinstance(para, dict) else []:
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), (str, int)):
                    continue
                answers = qa.get("answers") if isinstance(qa.get("answers"), list) else []
                out.append(GoldQuestion(
                    qid=str(qa["id"]).strip(),
                    question=qa["question"] if isinstance(qa.get("question"), str) else "",
                    context=context if isinstance(context, str) else "",
                    references=[a["text"] for a in answers
                                if isinstance(a, dict) and isinstance(a.get("text"), str)]))
    return out


def gold_references(path: str | Path) -> dict[str, list[str]]:
    """Question id -> reference texts of a gold file (see :func:`gold_questions`)."""
    return {q.qid: q.references for q in gold_questions(path)}


def to_squad_json(examples: Iterable[QAExample], version: str = "v1.0") -> dict[str, Any]:
    """Group examples back into a SQuAD/CMRC document (one paragraph per distinct context)."""
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str], dict[str, Any]] = {}
    for ex in examples:
        art = articles.setdefault(ex.title or "untitled", {"title": ex.title, "paragraphs": []})
        key = (ex.context_id, ex.context)
        if key not in paragraphs:
            paragraphs[key] = {"id": ex.context_id, "context": ex.context, "qas": []}
            art["paragraphs"].append(paragraphs[key])
        paragraphs[key]["qas"].append({
            "id": ex.qid,
            "question": ex.question,
            "answers": [{"text": t, "answer_start": s} for t, s in zip(ex.answers, ex.answer_starts)],
        })
    return {"version": version, "data": list(articles.values())}
