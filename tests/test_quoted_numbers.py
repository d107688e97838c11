"""Every figure the docs quote from a results page matches the JSON beside that page (issue 29).

Where a figure is checked:

- a sentence that references a results page ``docs/results/NAME.md`` (a markdown link, or the
  page's file name written out): each of its figures against ``docs/results/NAME.json`` (the
  union of the JSONs where it references several pages);
- a *results bullet*, a list item (sub-items included), or a table row that references a
  results page anywhere: every figure in it against the union of the pages it references.

Documents: ``README.md``, ``docs/results/README.md``, ``docs/methods.md`` and every other
``docs/**/*.md`` page that references a results page (found by glob; not the generated
``docs/results/NAME.md`` pages, which other tests hold to their JSON).

A figure is every number in such a text, with its sign; a range (``61–81 %``, ``1.7–2.6×``)
gives two. Not figures (settings, names, counts and dates, which no run measures): code spans,
link targets (a link's text is checked), bracketed lists and braced sets (``[100, 100]``,
``{1, 2, 4, 8}``), dates and years (``2026-12-01``, ``2019``), arXiv ids, numbers glued to a
name (``DE-4``, ``RQ3``), fractions (``8/255``, ``1/3``), powers (``5·10⁶``, ``1e-3``), a
setting written ``X = n`` with a one-symbol name (``M = 10``, ``K = 4``), ``issue n``, ``seed
n``, ``split k``, ``batch n``, shapes (``8 × 8``), a budget in the teacher's epochs (``at
4×``, ``from 4× to 6×``, ``2× the teacher's epochs``) and counts of what a run is made of
(``3 seeds``, ``2 cores``, ``1,293 training inputs``: ``COUNT_NOUNS``). A figure that cannot
be checked goes into ``ALLOWED`` with its reason.

A figure printed with d decimals matches a number v of the JSON (every int and float at any
depth, plus the few ratios the pages print but the JSON holds as parts: ``DERIVED``; not the
per-seed values under ``per_seed`` unless its sentence speaks of single seeds, ``PER_SEED``,
and never a page's per-confidence-bin curves, ``summary.diversity``) when
|v − x| ≤ ½·10^−d; an integer with trailing zeros (``100``, ``20,000``) is read at its last
non-zero digit. p % matches p/100 or p; ``10k`` is 10,000; a unit (``MFLOPs``, ``ms``, ``MiB``,
``GB``) may also be stored in base units. Signs are kept.

``python tests/test_quoted_numbers.py`` prints every mismatch: file, line, figure, the pages it
was checked against, and its sentence.
"""

from __future__ import annotations

import json
import math
import re
import sys
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
ALWAYS = ("README.md", "docs/results/README.md", "docs/methods.md")

# Counts of what a run is made of, never read from a results JSON: "3 seeds", "2 CPU cores".
COUNT_NOUNS = (
    "seed",
    "seeds",
    "core",
    "cores",
    "CPU cores",
    "CPUs",
    "thread",
    "threads",
    "CPU thread",
    "copies",
    "members",
    "member pair",
    "students",
    "epochs",
    "student epochs",
    "classes",
    "training inputs",
    "unlabelled",
    "images",
)

# (document, figure as printed, words of its sentence that identify it) -> why it is not in the
# linked JSON. Keep this short: a figure that can be checked is better than an allowed one.
ALLOWED: dict[tuple[str, str, str], str] = {}


@dataclass
class Figure:
    doc: str
    line: int
    text: str  # as printed, e.g. "2.58×" or "61 %"
    value: float
    unit: float  # half of this is the tolerance
    percent: bool
    sentence: str
    pages: tuple[str, ...]
    scale: float = 1.0  # the figure's unit in base units (MFLOPs: 1e6), 1 where it has none


@dataclass
class Block:
    kind: str  # "bullet", "row" or "paragraph"
    lines: list[tuple[int, str]] = field(default_factory=list)


# --- documents -------------------------------------------------------------------------


def result_pages() -> set[str]:
    return {p.stem for p in RESULTS.glob("*.json") if (RESULTS / f"{p.stem}.md").exists()}


def documents() -> list[Path]:
    """The three fixed documents plus every other docs page that references a results page."""
    docs = [ROOT / name for name in ALWAYS]
    for path in sorted(DOCS.rglob("*.md")):
        if path in docs or path.parent == RESULTS:
            continue
        if references(path.read_text(encoding="utf-8"), path.parent):
            docs.append(path)
    return docs


LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
CODE = re.compile(r"`[^`]*`")
BARE = re.compile(r"(?<![\w/.-])((?:docs/)?(?:results/)?([a-z0-9_]+)\.md)\b")


def references(text: str, base: Path) -> tuple[str, ...]:
    """The results pages a piece of text references: links resolved against ``base``, and
    page names written out (``benchmarks.md``, ``docs/results/regression.md``)."""
    pages = result_pages()
    found: list[str] = []
    for _, target in LINK.findall(text):
        target = target.split("#", 1)[0]
        if not target or "://" in target:
            continue
        path = (base / target).resolve()
        if path.parent == RESULTS and path.suffix == ".md" and path.stem in pages:
            found.append(path.stem)
    bare = CODE.sub(" ", LINK.sub(" ", text))
    for _, name in BARE.findall(bare):
        if name in pages:
            found.append(name)
    return tuple(dict.fromkeys(found))


def blocks(text: str) -> list[Block]:
    """Bullets (with their continuation lines and sub-items), table rows and paragraphs."""
    out: list[Block] = []
    current: Block | None = None
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            current = None
            continue
        if fenced or not stripped or stripped.startswith("<!--") or stripped.startswith("#"):
            current = None
            continue
        if stripped.startswith("|"):
            if not re.fullmatch(r"\|[\s:|-]+\|?", stripped):
                out.append(Block("row", [(number, stripped)]))
            current = None
            continue
        top_bullet = re.match(r"([-*]|\d+\.)\s", line) is not None
        if top_bullet:
            current = Block("bullet", [(number, line)])
            out.append(current)
        elif current is not None:
            current.lines.append((number, line))
        else:
            current = Block("paragraph", [(number, line)])
            out.append(current)
    return out


ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "Fig.", "vs.", "cf.", "No.")


def sentences(block: Block) -> list[tuple[int, str]]:
    """(line, text) of each sentence of a block; a sub-item starts a new sentence."""
    out: list[tuple[int, str]] = []
    glue = False  # the previous piece ended in an abbreviation: this one continues it
    for number, line in block.lines:
        stripped = line.strip()
        sub_item = re.match(r"([-*]|\d+\.)\s", stripped) is not None
        for k, piece in enumerate(re.split(r"(?<=[.!?])\s+(?=[A-Z*`(\[_])", stripped)):
            continues = out and (glue or (k == 0 and not sub_item))
            if continues:
                out[-1] = (out[-1][0], out[-1][1] + " " + piece)
            else:
                out.append((number, piece))
            glue = piece.endswith(ABBREVIATIONS)
    return out


# --- figures ---------------------------------------------------------------------------

SUPER = "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"
NUMBER = (
    r"(?<![\w.,/·^-])"  # not glued to a name, a decimal or a fraction
    r"(?P<sign>[−-])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?)"
    r"(?P<k>k\b)?"
)
FIGURE = re.compile(
    NUMBER
    + r"(?:\s?(?P<dash>[–-])\s?(?P<num2>\d+(?:\.\d+)?)(?![\w/]))?"
    + r"(?P<tail>\s?(?:%|×|x\b|†))?"
    + r"(?:\s?(?P<unit>[MG]FLOPs?\b(?!/)|ms\b|µs\b|MiB\b|MB\b|GiB\b|GB\b))?"
)
# A figure printed in these units may be stored in base units (FLOPs, seconds, bytes).
UNITS = {
    "M": 1e6,
    "G": 1e9,
    "ms": 1e-3,
    "µs": 1e-6,
    "MiB": 2**20,
    "MB": 1e6,
    "GiB": 2**30,
    "GB": 1e9,
}


def _masked(text: str) -> str:
    """The sentence with what is never a figure blanked out (same length, so positions hold)."""

    def blank(m: re.Match) -> str:
        """Blanks the match, or only its group ``fig`` (``fig2``) where the pattern has one."""
        for name in ("fig", "fig2"):
            if name in m.re.groupindex and m.group(name):
                a, b = m.start(name) - m.start(), m.end(name) - m.start()
                return m.group(0)[:a] + " " * (b - a) + m.group(0)[b:]
        return " " * len(m.group(0))

    text = CODE.sub(blank, text)
    text = re.sub(r"\[[^\]\[]*\](?!\()", blank, text)  # bracketed lists, intervals: settings
    # a link keeps its text (figures may sit in it) and loses its target
    text = LINK.sub(lambda m: f" {m.group(1)} ".ljust(len(m.group(0))), text)
    for pattern in (
        r"\b\d{4}-\d{2}-\d{2}\b",  # dates
        r"(?<![\d.])(?:19|20)\d{2}(?![\d.,%×])",  # years
        r"arXiv \d+\.\d+",
        r"\d+(?:\.\d+)?\s?/\s?\d+",  # fractions: step sizes (8/255), bands (1/3)
        r"\d*·?10[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+",  # powers: limits and settings
        r"\w*[" + SUPER + r"]+",
        r"\d+(?:\.\d+)?e-?\d+",
        r"(?<![\w])[^\W\d_][̂̄]?[₀-₉]*\s?=\s?[−-]?\d+(?:\.\d+)?",  # X = n settings
        r"\b(?:issues?|seed|split|epoch|batch|RQ|Fig\.|step)\s\d+(?:\s?(?:and|,)\s?\d+)*",
        r"\{[^}]*\}",  # sets of settings: {1, 2, 4, 8}/255
        # a budget in the teacher's epochs: "at 4×", "from 4× to 6×", "clean 6×", "2× the
        # teacher's epochs"
        r"\b(?:at|to|of|from|clean|pooled) (?P<fig>\d+×)|(?P<fig2>\d+×)(?=’|'|\s(?:the|its)"
        r" teacher's epochs)",
        r"\d+\s?×\s?\d+",  # shapes: 8 × 8
        r"\d+(?:-\d+)+(?=\s?(?:MLP|heads|network))|(?<=MLP )\d+(?:-\d+)+",  # widths 800-800
    ):
        text = re.sub(pattern, blank, text)
    counts = "|".join(sorted((re.escape(n) for n in COUNT_NOUNS), key=len, reverse=True))
    text = re.sub(
        r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\s(?:of\s\d+|to\s\d+))?\s(?:" + counts + r")\b",
        blank,
        text,
    )
    return text


def _precision(num: str) -> float:
    if "." in num:
        return 10.0 ** -len(num.split(".", 1)[1])
    digits = num.replace(",", "")
    zeros = len(digits) - len(digits.rstrip("0"))
    return 10.0 ** min(zeros, len(digits) - 1) if digits != "0" else 1.0


def figures(doc: str, line: int, sentence: str, pages: tuple[str, ...]) -> list[Figure]:
    masked = _masked(sentence)
    out: list[Figure] = []
    for m in FIGURE.finditer(masked):
        tail = (m.group("tail") or "").strip()
        percent = tail == "%"
        scale = 1000.0 if m.group("k") else 1.0
        name = m.group("unit") or ""
        base = UNITS.get(name, UNITS.get(name[:1], 1.0)) if name else 1.0
        sign = -1.0 if m.group("sign") else 1.0
        printed = sentence[m.start() : m.end()].strip()
        ends = [m.group("num")] + ([m.group("num2")] if m.group("num2") else [])
        for num in ends:
            out.append(
                Figure(
                    doc=doc,
                    line=line,
                    text=printed
                    if len(ends) == 1
                    else f"{num}{' %' if percent else tail} ({printed})",
                    value=sign * float(num.replace(",", "")) * scale,
                    unit=_precision(num) * scale,
                    percent=percent,
                    sentence=sentence,
                    pages=pages,
                    scale=base,
                )
            )
            sign = 1.0  # a range's second end has no sign of its own
    return out


def document_figures(doc: str, text: str, base: Path) -> list[Figure]:
    """The figures of one document (``text``, its links resolved against ``base``): every
    sentence of a bullet or a table row that references a page anywhere, and every other
    sentence that references one itself."""
    out: list[Figure] = []
    for block in blocks(text):
        block_pages = ()
        if block.kind in ("bullet", "row"):
            block_pages = references(" ".join(t for _, t in block.lines), base)
        for line, sentence in sentences(block):
            pages = block_pages or references(sentence, base)
            if pages:
                out.extend(figures(doc, line, sentence, pages))
    return out


def quoted_figures() -> list[Figure]:
    out: list[Figure] = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        out.extend(document_figures(str(path.relative_to(ROOT)), text, path.parent))
    return out


# --- matching --------------------------------------------------------------------------


def _numbers(node, skip: tuple[str, ...] = ()) -> list[float]:
    """Every int and float in a JSON value, at any depth, but under the keys ``skip``."""
    if isinstance(node, dict):
        return [v for key, item in node.items() if key not in skip for v in _numbers(item)]
    if isinstance(node, list):
        return [v for item in node for v in _numbers(item)]
    if isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
        return [float(node)]
    return []


def _dicts(node):
    """Every JSON object in a JSON value, at any depth."""
    if isinstance(node, dict):
        yield node
        for item in node.values():
            yield from _dicts(item)
    elif isinstance(node, list):
        for item in node:
            yield from _dicts(item)


def _mean(cell):
    """A summary cell, [mean, std] or a plain number, as its mean (None if absent)."""
    if isinstance(cell, list) and cell and isinstance(cell[0], (int, float)):
        return float(cell[0])
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return float(cell)
    return None


def _ratios(pairs) -> list[float]:
    return [a / b for a, b in pairs if a is not None and b not in (None, 0)]


# Figures the pages print but their JSON holds only as parts: each function computes them from
# the JSON (so they are still checked), named by what the prose calls them.


def _benchmarks(d) -> list[float]:
    """Stacked over looped teacher training (the page's "vectorised speed-up"); compile over
    eager at the same setting; the GEMM ceiling of a training step as a fraction of the peak."""
    teacher = {(r["workload"], r["members"], r["mode"]): r for r in d.get("teacher", [])}
    speedups = [
        (teacher[(w, m, "loop")]["seconds_per_epoch"], r["seconds_per_epoch"])
        for (w, m, mode), r in teacher.items()
        if mode == "vectorised" and (w, m, "loop") in teacher
    ]
    variants = {(r["workload"], r["variant"], r["phase"]): r for r in d.get("variants", [])}
    compiled = [
        (variants[(w, "auto", phase)]["seconds_per_epoch"], r["seconds_per_epoch"])
        for (w, v, phase), r in variants.items()
        if v == "auto + compile" and (w, "auto", phase) in variants
    ]
    peak = d.get("gemm", {}).get("peak_gflops")
    ceilings = [(r.get("gemm_ceiling_gflops"), peak) for r in d.get("teacher", [])]
    return _ratios(speedups + compiled + ceilings)


def _gflops(d) -> list[float]:
    """GFLOP/s of every model or head set that has FLOPs and latencies (hydra_cost)."""
    pairs = []
    for node in _dicts(d):
        flops = node.get("flops")  # per example, as the latencies are
        if isinstance(flops, (int, float)):
            pairs += [(flops / 1e9, v) for k, v in node.items() if k.startswith("latency_s_b")]
    return _ratios(pairs)


def _hydra_mnist(d) -> list[float]:
    """Parameters of one model over another's; the teachers' disagreement on test over
    training inputs."""
    params = [m.get("params") for m in d.get("methods", {}).values()]
    pairs = [(a, b) for a in params for b in params if a and b and a != b]
    diversity = d.get("diversity", {})
    pairs.append((diversity.get("clean_test"), diversity.get("clean_train")))
    return _ratios(pairs)


def _diversity_fashion(d) -> list[float]:
    """The teachers' disagreement on test over training inputs."""
    diversity = d.get("diversity", {})
    return _ratios([(_mean(diversity.get("clean_test")), _mean(diversity.get("clean_train")))])


def _recipes(d) -> list[float]:
    """A student's training FLOPs and seconds over the teacher's; FLOPs of one recipe over
    another's for the same method ("2.8× fewer FLOPs")."""
    summary = d.get("summary", {})
    teacher = summary.get("teacher", {})
    rows = list(summary.get("rows", {}).values())
    pairs = [
        (_mean(row.get(key)), _mean(teacher.get(key)))
        for row in rows
        for key in ("train_flops", "train_seconds")
    ]
    pairs += [
        (_mean(a.get("train_flops")), _mean(b.get("train_flops")))
        for a in rows
        for b in rows
        if a is not b and a.get("method") == b.get("method")
    ]
    return _ratios(pairs)


def _tradeoff(d) -> list[float]:
    """Every model's parameters over KD's (one network's)."""
    rows = d.get("summary", {}).get("rows", {})
    kd = _mean(rows.get("kd", {}).get("params"))
    return _ratios([(_mean(row.get("params")), kd) for row in rows.values()])


def _imagefolder(d) -> list[float]:
    """Streamed over in-memory training time."""
    seconds = d.get("train_seconds", {})
    return _ratios([(seconds.get("streamed"), seconds.get("in_memory"))])


DERIVED = {
    "benchmarks": _benchmarks,
    "hydra_cost": _gflops,
    "hydra_mnist": _hydra_mnist,
    "diversity_fashion": _diversity_fashion,
    "recipes": _recipes,
    "recipes_fashion": _recipes,
    "recipes_digits": _recipes,
    "hydra_tradeoff": _tradeoff,
    "hydra_tradeoff_fashion": _tradeoff,
    "imagefolder": _imagefolder,
}


# A sentence about single seeds ("4.8 to ≥ 10 by seed", "seed 0 reads 0.231"), which may
# quote a page's per-seed values; any other figure is read against what its tables show.
PER_SEED = re.compile(r"\b(?:by|every|each|per|some|one|any) seed\b|\bseeds? \d")
# Thousands of per-seed values and per-confidence-bin curves would match almost any figure by
# chance (9 in 10 three-decimal figures on the disagreement pages): the seeds' count only in a
# sentence about single seeds, the bins never.
SEED_KEYS = ("per_seed",)


@cache
def json_values(page: str, seeds: bool = False) -> list[float]:
    """The numbers of docs/results/PAGE.json, with the figures DERIVED from them; the per-seed
    values only with ``seeds``. A page's ``summary.diversity`` is the per-confidence-bin
    curves of its figure, never quoted."""
    data = json.loads((RESULTS / f"{page}.json").read_text(encoding="utf-8"))
    derived = DERIVED.get(page, lambda _: [])(data)
    summary = data.get("summary")
    if isinstance(summary, dict) and "diversity" in summary:
        data = data | {"summary": {k: v for k, v in summary.items() if k != "diversity"}}
    skip = () if seeds else SEED_KEYS
    return sorted(_numbers(data, skip) + [v for v in derived if math.isfinite(v)])


def _near(values: list[float], target: float, tol: float) -> bool:
    k = bisect_left(values, target - tol)
    return k < len(values) and values[k] <= target + tol


def matches(figure: Figure) -> bool:
    tol = figure.unit / 2 * (1 + 1e-9) + 1e-12
    factors = [0.01, 1.0] if figure.percent else [1.0, figure.scale]
    targets = [figure.value * f for f in factors]
    tols = [tol * f * (1 + 1e-9) for f in factors]
    seeds = PER_SEED.search(figure.sentence) is not None
    for page in figure.pages:
        values = json_values(page, seeds)
        if any(_near(values, t, e) for t, e in zip(targets, tols, strict=True)):
            return True
    return False


def allowed(figure: Figure) -> bool:
    for (doc, text, words), _reason in ALLOWED.items():
        if doc == figure.doc and text == figure.text and words in figure.sentence:
            return True
    return False


def mismatches() -> list[Figure]:
    return [f for f in quoted_figures() if not matches(f) and not allowed(f)]


def describe(figure: Figure) -> str:
    pages = ", ".join(f"{p}.json" for p in figure.pages)
    context = re.sub(r"\s+", " ", figure.sentence)
    if len(context) > 160:
        at = max(context.find(figure.text), 0)
        context = "…" + context[max(at - 70, 0) : at + 70] + "…"
    return f"{figure.doc}:{figure.line}: {figure.text!r} not in {pages}: {context}"


# --- tests ---------------------------------------------------------------------------


def _doc_ids() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in documents()]


@pytest.mark.parametrize("doc", _doc_ids())
def test_every_quoted_figure_is_in_its_json(doc):
    bad = [f for f in mismatches() if f.doc == doc]
    assert not bad, f"{len(bad)} figures of {doc} not in their JSON:\n" + "\n".join(
        describe(f) for f in bad
    )


def test_the_documents_quote_results():
    """The check is not vacuous: the fixed documents exist and quote results pages."""
    figures_by_doc = {f.doc for f in quoted_figures()}
    for name in ("docs/results/README.md", "docs/methods.md"):
        assert name in figures_by_doc


def _check(sentence: str, page: str) -> list[str]:
    """The figures of one sentence that do not match ``page``'s JSON."""
    return [f.text for f in figures("t.md", 1, sentence, (page,)) if not matches(f)]


def test_stale_figures_fail(tmp_path, monkeypatch):
    """Issue 29's case, frozen: the bullet said 145 GFLOP/s, 61–81 % and 589 MiB while the
    page's JSON held 212.4, 54–72 % and 497.5; the stale figures are caught, the held pass."""
    record = {"gemm": {"peak_gflops": 212.4}, "fractions": [0.54, 0.72], "peak_rss_mib": 497.5}
    (tmp_path / "benchmarks.json").write_text(json.dumps(record))
    monkeypatch.setattr(sys.modules[__name__], "RESULTS", tmp_path)
    json_values.cache_clear()
    try:
        stale = "GEMM peak 145 GFLOP/s; 61–81 % of the peak; the ensemble adds 589 MiB"
        expected = ["145", "61 % (61–81 %)", "81 % (61–81 %)", "589 MiB"]
        assert _check(stale, "benchmarks") == expected
        held = "GEMM peak 212 GFLOP/s; 54–72 % of the peak; the ensemble adds 497.5 MiB"
        assert _check(held, "benchmarks") == []
    finally:
        json_values.cache_clear()  # the other tests read the real pages


def test_every_sentence_of_a_table_row_that_references_a_page_is_checked():
    """A row links its page once, in its first sentence; the later sentences' figures are
    checked against it too (they were not: methods.md's ``student.init`` row had gone
    unchecked)."""
    row = (
        "| `student.init` | Measured ([results/member_start.md](results/member_start.md)): one. "
        "Another sentence quotes 0.2999. |"
    )
    found = document_figures("docs/methods.md", f"| key | text |\n|---|---|\n{row}\n", DOCS)
    assert [(f.text, f.pages) for f in found] == [("0.2999", ("member_start",))]


def test_per_seed_values_count_only_in_a_sentence_about_single_seeds(tmp_path, monkeypatch):
    """A mean quoted from a seed's value, or from a bin of a figure's curve, is a misquote
    (docs/results/README.md once quoted 0.831, a per-seed AUROC of another row, for a mean
    of 0.830); a sentence about single seeds may quote them."""
    record = {
        "summary": {"rows": {"hydra": {"auroc": [0.8304, 0.04]}}, "diversity": [0.123]},
        "per_seed": {"0": {"rows": {"endd": {"auroc": 0.8306}}}},
    }
    (tmp_path / "page.json").write_text(json.dumps(record))
    monkeypatch.setattr(sys.modules[__name__], "RESULTS", tmp_path)
    json_values.cache_clear()
    try:
        assert _check("AUROC by MI 0.830 (0.04)", "page") == []
        assert _check("AUROC by MI 0.831", "page") == ["0.831"]
        assert _check("the seeds read 0.831 by seed", "page") == []
        assert _check("the diversity reads 0.123", "page") == ["0.123"]
    finally:
        json_values.cache_clear()


def test_rounding_is_the_printed_precision():
    """imagefolder.json: 31.277 s streamed, 6.260 s in memory (4.996× apart)."""
    assert _check("streamed 31.3 s, 31.28 s; 5.0× (5×) faster in memory", "imagefolder") == []
    assert _check("streamed 31.2 s", "imagefolder") == ["31.2"]
    assert _check("streamed 31.27 s", "imagefolder") == ["31.27"]
    assert _check("5.1× faster in memory", "imagefolder") == ["5.1×"]
    assert _check("decodes 2,177 a second: 44 % of", "imagefolder") == ["44 %"]


def test_settings_counts_and_dates_are_not_figures():
    sentence = (
        "MNIST (M = 10, 3 seeds, η = 8/255, issue 16, seed 7, 2026-12-01, [100, 100] heads, "
        "DE-4, at 4× the teacher's epochs, `kd.alpha=0.123`, 2019) reads 0.5"
    )
    assert [f.text for f in figures("t.md", 1, sentence, ("recipes",))] == ["0.5"]


if __name__ == "__main__":
    found = mismatches()
    for f in found:
        print(describe(f))
    print(f"{len(found)} mismatches of {len(quoted_figures())} figures")
