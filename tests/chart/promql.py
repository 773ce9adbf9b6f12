"""Just enough PromQL to find which metrics and labels an expression refers to.

Strings, durations and numbers are dropped; a ``{...}`` matcher yields label names;
``by``/``without``/``on``/``ignoring``/``group_*`` lists yield label names; any other
identifier that is not a function, keyword or operator is a metric name.
"""

from __future__ import annotations

import dataclasses
import re

FUNCTIONS = {
    "abs",
    "absent",
    "avg",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_values",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "stddev",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "bottomk",
    "vector",
}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


@dataclasses.dataclass
class Refs:
    metrics: set[str] = dataclasses.field(default_factory=set)
    matchers: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (metric, label)
    grouping: set[str] = dataclasses.field(default_factory=set)
    unknown: set[str] = dataclasses.field(default_factory=set)  # functions we do not know

    def merge(self, other: Refs) -> None:
        self.metrics |= other.metrics
        self.matchers |= other.matchers
        self.grouping |= other.grouping
        self.unknown |= other.unknown


TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''  # strings
    r"|\[[^\]]*\]"  # range selectors and subqueries
    r"|\$\w+|\$\{\w+\}"  # Grafana variables
    r"|[A-Za-z_:][\w:]*"  # identifiers
    r"|\{|\}|\(|\)|,|[^\sA-Za-z_{}(),\"']+"
)


def references(expr: str) -> Refs:
    refs = Refs()
    tokens = TOKEN.findall(expr)
    i = 0
    last_metric = ""
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "label_values" and nxt == "(":  # Grafana: label_values(metric, label)
            *selector, label = [t for t in tokens[i + 2 : tokens.index(")", i)] if t != ","]
            refs.merge(references(" ".join(selector)))
            refs.grouping.add(label)
            i = tokens.index(")", i) + 1
            continue
        if tok in GROUPING and nxt == "(":
            j = i + 2
            while tokens[j] != ")":
                if tokens[j] != ",":
                    refs.grouping.add(tokens[j])
                j += 1
            i = j + 1
            continue
        if tok == "{":
            j = i + 1
            while tokens[j] != "}":
                if re.fullmatch(r"[A-Za-z_]\w*", tokens[j]) and tokens[j + 1] in (
                    "=",
                    "!=",
                    "=~",
                    "!~",
                ):
                    refs.matchers.add((last_metric, tokens[j]))
                j += 1
            i = j + 1
            continue
        if re.fullmatch(r"[A-Za-z_:][\w:]*", tok):
            if tok in FUNCTIONS:
                pass
            elif nxt == "(":
                refs.unknown.add(tok)
            elif tok.lower() not in KEYWORDS:
                refs.metrics.add(tok)
                last_metric = tok
        i += 1
    return refs
