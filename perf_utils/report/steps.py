"""An upgrade package by package, as a person reads it: a table of each step's change per benchmark beside the
whole upgrade's, then a line per change of the whole saying which package made it (`gate.steps`). torch-free."""

from __future__ import annotations

from tabulate import tabulate

from perf_utils.gate.compare import IMPROVED, REGRESSED, UNCHANGED, BenchmarkVerdict, Comparison
from perf_utils.gate.steps import WHOLE, Attribution, StepVerdict, attribute, called_in_steps_only
from perf_utils.report.table import FOLDED, VERDICT_MARKDOWN, VERDICT_TEXT, pct

HEADING = "The upgrade step by step"


def _cell(v: BenchmarkVerdict | None, words: dict[str, str], joiner: str) -> str:
    """Latency's change with its verdict where not unchanged, then any other metric the step called (a noisy host
    peak is left to the kept runs: said in every cell, it hid the latencies)."""
    if v is None:
        return "-"
    latency = v.metric("latency_s")
    if latency is None or v.verdict in WHOLE:  # lost, new, unavailable, failed: its verdict is all there is
        return words.get(v.verdict, v.verdict)
    parts = [pct(latency.change) + ("" if latency.verdict == UNCHANGED else f" {words.get(latency.verdict)}")]
    others = [m for m in v.called(REGRESSED, IMPROVED) if m.metric != "latency_s"]
    parts += [f"{m.info.label} {pct(m.change)} {words.get(m.verdict)}" for m in others]
    return joiner.join(parts)


def steps_table(total: Comparison, steps: list[StepVerdict], tablefmt: str = "simple") -> str:
    """A row per benchmark measured on either end; a column per step (its label), then the whole upgrade."""
    lines = tablefmt != "github"
    words = VERDICT_TEXT if lines else VERDICT_MARKDOWN
    joiner = "\n" if lines else ", "
    rows = []
    for v in total.verdicts:
        if v.verdict in FOLDED:
            continue
        rows.append([v.id, *(_cell(s.verdict(v.id), words, joiner) for s in steps), _cell(v, words, joiner)])
    headers = ["benchmark", *(_header(s.label, lines) for s in steps), "all together"]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def _header(label: str, lines: bool) -> str:
    """On a terminal each package's change over two lines (`transformers` / `4.48.3 -> 5.24.0`), and a step of
    several packages one under the other: a column no wider than its versions."""
    if not lines:
        return label
    return "\n".join(change.replace(" ", "\n", 1) for change in label.split(", "))


def attribution_lines(total: Comparison, steps: list[StepVerdict]) -> list[str]:
    """A line per change of the whole upgrade naming the step(s) that made it, one per benchmark whose steps'
    changes cancel, and one per step that changed fp32 eager's numbers."""
    out = [_said(a) for a in attribute(total, steps)]
    out += [f"numerics changed at {s.label}: {'; '.join(s.numerics)}" for s in steps if s.numerics]
    if steps and all(s.numerics == [] for s in steps):
        out.append("numerics: fp32 eager computes the same at every step (golden fingerprint)")
    for benchmark, moved in called_in_steps_only(total, steps):
        each = "; ".join(f"{label}: {m.info.label} {pct(m.change)} {m.verdict}" for label, m in moved)
        out.append(f"{benchmark}: not called over the whole upgrade, but {each}")
    return out


def _said(a: Attribution) -> str:
    what = a.verdict.upper() if a.metric is None else f"{a.metric.info.label} {pct(a.metric.change)} {a.verdict}"
    if a.came_with:
        shares = dict(a.shares)
        came = " and ".join(
            label + (f" ({pct(m.change)})" if (m := shares.get(label)) is not None else "") for label in a.came_with
        )
        return f"{a.benchmark} {what}: came with {came}" + (f": {a.reason}" if a.reason else "")
    if a.metric is None:
        return f"{a.benchmark} {what}: no one step made it (its steps' verdicts differ from the whole's)"
    each = ", ".join(f"{label} {pct(m.change)} {m.verdict}" if m else f"{label} -" for label, m in a.shares)
    return f"{a.benchmark} {what}: no single step calls it ({each}); together they make it"


def markdown(total: Comparison, steps: list[StepVerdict]) -> str:
    """The section added to the candidate's report: the table and the lines."""
    lines = "\n".join(f"- {line}" for line in attribution_lines(total, steps)) or "- no step called a change"
    intro = "Each stack against the one before it, paired in the same session of alternating trials."
    return f"## {HEADING}\n\n{intro}\n\n{steps_table(total, steps, 'github')}\n\n{lines}\n"
