"""``paddleqa compare GOLD A B``: where two systems differ on the same questions, and how sure it is.

Paired EM/F1 differences with bootstrap intervals, how often the two give the same answer, the
scores by question type (the question word), by answer length and by context length, an error
taxonomy per system, and the questions on which they disagree most -- as JSON, Markdown and HTML.
Everything is computed from the gold file and two leaderboard-format prediction files, so it
works for any pair of artifacts (a student against its teacher, int8 against fp32, two runs).
"""
from __future__ import annotations

import dataclasses
import html
import logging
import re
from pathlib import Path
from typing import Sequence

from ..core.config import opt
from ..core.errors import DataError, PaddleQAError
from ..core.io import atomic_write_text, read_json, write_json
from ..core.metrics import question_scores
from ..core.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_ci, paired_bootstrap
from ..text.dataset import GoldQuestion, gold_questions

log = logging.getLogger(__name__)

# Question types by the question word, most specific first ("什么时候" is a time question, not a
# "什么" one; "为什么" is a reason). The first pattern found in the question decides.
QUESTION_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("为什么 why", ("为什么", "为何", "何故")),
    ("何时 when", ("什么时候", "何时", "哪一年", "哪年", "几年", "哪一天", "哪天", "几月", "几号", "几时",
                  "什么时间", "哪个时期", "什么年代", "哪个朝代")),
    ("怎么 how", ("怎么", "怎样", "如何", "什么方式", "什么方法")),
    ("谁 who", ("谁", "哪位", "哪个人", "什么人")),
    ("哪里 where", ("哪里", "哪儿", "何处", "何地", "什么地方", "哪个地方", "哪个国家", "哪个城市", "位于")),
    ("多少/几 how many", ("多少", "几", "多大", "多长", "多高", "多重", "多久", "多远")),
    ("是否 yes/no", ("是否", "是不是", "有没有", "能否", "吗")),
    ("哪 which", ("哪",)),
    ("什么 what", ("什么", "何", "啥")),
)
OTHER_TYPE = "其他 other"
ANSWER_LENGTH_BINS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, None))
CONTEXT_LENGTH_BINS = ((0, 300), (301, 500), (501, 800), (801, 1200), (1201, None))
ERRORS = ("exact", "boundary", "wrong span", "no answer")


@dataclasses.dataclass
class CompareConfig:
    """Compare two prediction files on one gold file."""

    gold_file: str = opt("", help="SQuAD/CMRC JSON with reference answers")
    pred_a: str = opt("", help='predictions of system A: {"question_id": "answer text", ...}')
    pred_b: str = opt("", help="predictions of system B, same format")
    name_a: str = opt("A", help="label of system A in the tables")
    name_b: str = opt("B", help="label of system B in the tables")
    out_dir: str = opt("", help="write compare.json, compare.md and compare.html here ('' = print only)")
    top_disagreements: int = opt(20, help="questions listed where the two F1 differ most")
    resamples: int = opt(DEFAULT_RESAMPLES, help="bootstrap resamples for the intervals")
    seed: int = opt(DEFAULT_SEED, help="seed of the bootstrap")

    def __post_init__(self) -> None:
        for name in ("gold_file", "pred_a", "pred_b"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if self.top_disagreements < 0 or self.resamples < 1:
            raise ValueError("top_disagreements must be >= 0 and resamples >= 1")


def question_type(question: str) -> str:
    """The type of a question by its question word (see :data:`QUESTION_TYPES`)."""
    for name, words in QUESTION_TYPES:
        if any(w in question for w in words):
            return name
    return OTHER_TYPE


def _bin(value: int, bins: Sequence[tuple[int, int | None]], unit: str) -> str:
    for lo, hi in bins:
        if value >= lo and (hi is None or value <= hi):
            return f"{lo}+ {unit}" if hi is None else f"{lo}-{hi} {unit}"
    return f"<{bins[0][0]} {unit}"


def error_kind(em: float, f1: float, prediction: str | None) -> str:
    """exact; boundary (overlaps a reference, wrong ends); wrong span (no overlap); no answer."""
    if prediction is None or not prediction.strip():
        return "no answer"
    if em:
        return "exact"
    return "boundary" if f1 > 0 else "wrong span"


def read_predictions(path: str | Path) -> dict[str, str]:
    """A leaderboard-format predictions file, with errors that name the file and the fix."""
    p = Path(path)
    preds, _ = read_json(p, fix="pass the predictions JSON file (as `paddleqa evaluate` writes)")
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise DataError(p, 'predictions must be one object {"question_id": "answer text", ...}',
                        "write the leaderboard format (as `paddleqa evaluate` does)")
    return preds  # ids as written: the official script looks them up unstripped


def per_question(gold: list[GoldQuestion], preds: dict[str, str]) -> list[dict]:
    """Per gold question: EM and F1 in percent, the answer given (None: missing) and its error kind."""
    scores = question_scores({q.qid: q.references for q in gold}, preds)
    rows = []
    for q in gold:
        em, f1 = (100.0 * x for x in scores[q.qid])
        pred = preds.get(q.qid)
        rows.append({"em": em, "f1": f1, "answer": pred, "error": error_kind(em, f1, pred)})
    return rows


def _group_table(gold: list[GoldQuestion], a: list[dict], b: list[dict], key) -> list[dict]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(gold):
        groups.setdefault(key(q), []).append(i)
    table = []
    for name, idx in groups.items():
        n = len(idx)
        table.append({"group": name, "questions": n,
                      "a_em": round(sum(a[i]["em"] for i in idx) / n, 2),
                      "a_f1": round(sum(a[i]["f1"] for i in idx) / n, 2),
                      "b_em": round(sum(b[i]["em"] for i in idx) / n, 2),
                      "b_f1": round(sum(b[i]["f1"] for i in idx) / n, 2)})
    return table


def compare(gold: list[GoldQuestion], preds_a: dict[str, str], preds_b: dict[str, str], *,
            top: int = 20, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict:
    """Every statistic of the comparison as plain data (see the module docstring)."""
    if not gold:
        raise PaddleQAError("the gold file has no questions to compare on")
    a, b = per_question(gold, preds_a), per_question(gold, preds_b)
    n = len(gold)

    def summary(rows: list[dict]) -> dict:
        em, f1 = [r["em"] for r in rows], [r["f1"] for r in rows]
        return {"em": round(sum(em) / n, 3), "f1": round(sum(f1) / n, 3),
                "em_ci95": bootstrap_ci(em, resamples=resamples, seed=seed),
                "f1_ci95": bootstrap_ci(f1, resamples=resamples, seed=seed),
                "missing": sum(r["answer"] is None for r in rows),
                "errors": {k: sum(r["error"] == k for r in rows) for k in ERRORS}}

    same = sum(x["answer"] is not None and x["answer"].strip() == (y["answer"] or "").strip()
               for x, y in zip(a, b))
    by_gap = sorted(range(n), key=lambda i: (-abs(a[i]["f1"] - b[i]["f1"]), gold[i].qid))
    disagreements = [{"id": gold[i].qid, "question": gold[i].question, "references": gold[i].references,
                      "a": a[i]["answer"], "b": b[i]["answer"], "a_f1": round(a[i]["f1"], 1),
                      "b_f1": round(b[i]["f1"], 1)}
                     for i in by_gap[:top] if a[i]["f1"] != b[i]["f1"]]
    ref_len = lambda q: min((len(r) for r in q.references), default=0)  # noqa: E731
    return {
        "questions": n, "a": summary(a), "b": summary(b),
        "em_delta": paired_bootstrap([r["em"] for r in a], [r["em"] for r in b], resamples=resamples, seed=seed),
        "f1_delta": paired_bootstrap([r["f1"] for r in a], [r["f1"] for r in b], resamples=resamples, seed=seed),
        "agreement": round(same / n, 4),
        "by_question_type": _group_table(gold, a, b, lambda q: question_type(q.question)),
        "by_answer_length": _group_table(gold, a, b, lambda q: _bin(ref_len(q), ANSWER_LENGTH_BINS, "chars")),
        "by_context_length": _group_table(gold, a, b, lambda q: _bin(len(q.context), CONTEXT_LENGTH_BINS, "chars")),
        "disagreements": disagreements,
    }


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return out + ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]


def to_markdown(result: dict, name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as a Markdown page (tables only; the JSON holds the same numbers)."""
    ra, rb = result["a"], result["b"]
    md = [f"# {name_a} vs {name_b}", "",
          f"{result['questions']} questions. Intervals: 95% bootstrap over questions. Same answer text "
          f"on {100 * result['agreement']:.1f}% of them.", ""]
    md += _table(["", "EM", "EM 95% CI", "F1", "F1 95% CI", "missing"],
                 [[name, r["em"], r["em_ci95"], r["f1"], r["f1_ci95"], r["missing"]]
                  for name, r in ((name_a, ra), (name_b, rb))])
    d_em, d_f1 = result["em_delta"], result["f1_delta"]
    md += ["", f"{name_a} - {name_b}: EM {d_em['delta']:+.2f} (95% CI {d_em['ci95']}), "
               f"F1 {d_f1['delta']:+.2f} (95% CI {d_f1['ci95']}).", "", "## Errors", ""]
    md += _table(["", *ERRORS], [[name, *(r["errors"][k] for k in ERRORS)] for name, r in ((name_a, ra), (name_b, rb))])
    for key, title in (("by_question_type", "By question type"), ("by_answer_length", "By answer length"),
                       ("by_context_length", "By context length")):
        md += ["", f"## {title}", ""]
        md += _table(["group", "questions", f"{name_a} EM", f"{name_a} F1", f"{name_b} EM", f"{name_b} F1"],
                     [[g["group"], g["questions"], g["a_em"], g["a_f1"], g["b_em"], g["b_f1"]] for g in result[key]])
    md += ["", "## Largest disagreements", ""]
    md += _table(["id", "question", "references", name_a, f"{name_a} F1", name_b, f"{name_b} F1"],
                 [[d["id"], d["question"], " / ".join(d["references"]), d["a"], d["a_f1"], d["b"], d["b_f1"]]
                  for d in result["disagreements"]])
    return "\n".join(md) + "\n"


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Escaped text with Markdown links ``[text](url)`` as HTML links."""
    return _LINK.sub(r"<a href='\2'>\1</a>", html.escape(text))


def markdown_html(markdown: str) -> str:
    """The HTML of the Markdown this module and the run report write: headings, paragraphs,
    pipe tables and links (no renderer needed to read the pages)."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if set("".join(cells)) <= set("-: "):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>"
                        + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    return "\n".join(body)


def to_html(markdown: str, title: str) -> str:
    """A self-contained HTML page of the Markdown tables."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>\n"
            + markdown_html(markdown) + "\n</body></html>\n")


def run(config: CompareConfig) -> dict:
    """Compare, write compare.json/.md/.html when ``out_dir`` is set; returns the statistics."""
    gold = gold_questions(config.gold_file)
    result = compare(gold, read_predictions(config.pred_a), read_predictions(config.pred_b),
                     top=config.top_disagreements, resamples=config.resamples, seed=config.seed)
    result["names"] = {"a": config.name_a, "b": config.name_b}
    if config.out_dir:
        out = Path(config.out_dir)
        md = to_markdown(result, config.name_a, config.name_b)
        write_json(out / "compare.json", result)
        atomic_write_text(out / "compare.md", md)
        atomic_write_text(out / "compare.html", to_html(md, f"{config.name_a} vs {config.name_b}"))
        log.info("comparison written to %s", out / "compare.html")
    return result
