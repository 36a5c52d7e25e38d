#!/usr/bin/env python3
"""Check that every metric a Grafana dashboard queries is exported.

Usage: check_dashboard_metrics.py DASHBOARD_JSON METRICS_TEXT_FILE [--optional PATTERN ...]

DASHBOARD_JSON is a Grafana dashboard (plain, or wrapped in {"dashboard": ...});
METRICS_TEXT_FILE is a Prometheus text exposition (e.g. `curl -s
http://127.0.0.1:9100/metrics > metrics.txt`; "-" reads standard input).

Every metric name in the panels' `expr` queries (rows' nested panels too) must
be a metric family of the exposition (its `# TYPE` lines, or its samples);
NAME_bucket, NAME_sum and NAME_count match a histogram or summary NAME.
PromQL functions, aggregations, keywords, label names and values, durations
and Grafana variables are not metric names.

--optional PATTERN (a regular expression matched against the whole name, may
be repeated) names metrics that may legitimately be absent: labelled metrics
appear in /metrics only after their first sample (plugin_failures_total before
any failure), kafka_* only when Kafka is configured. They are reported, but do
not fail the check.

Exit status: 0 all present, 1 some missing (listed on stderr), 2 usage or input error.
"""

import json
import re
import sys

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2", "le",
}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def exprs(dashboard):
    """Every `expr` of every panel target, including panels nested in rows."""
    if isinstance(dashboard, dict) and "dashboard" in dashboard and "panels" not in dashboard:
        dashboard = dashboard["dashboard"]
    out = []

    def walk(panels):
        for p in panels or []:
            for t in p.get("targets") or []:
                e = t.get("expr")
                if isinstance(e, str) and e.strip():
                    out.append((p.get("title", "?"), e))
            walk(p.get("panels"))

    walk(dashboard.get("panels"))
    return out


def metric_names(expr):
    """The metric names a PromQL expression selects."""
    s = expr
    # Grafana variables: ${var}, ${var:fmt}, $var, $__rate_interval, [[var]].
    s = re.sub(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]", " ", s)
    # String literals (label values, label_replace arguments...).
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', s)
    # Label matchers and range/subquery selectors.
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    # Grouping clauses: their parentheses hold label names.
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    # offset 5m, @ start()/@ 1234
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"@\s*(start\(\)|end\(\)|[\d.]+)", " ", s)
    names = []
    i = 0
    while i < len(s):
        m = NUMBER.match(s, i)
        if m and (i == 0 or not (s[i - 1].isalnum() or s[i - 1] in "_:")):
            i = m.end()
            # a duration suffix such as 5m or 1h30m
            while i < len(s) and (s[i].isalnum()):
                i += 1
            continue
        m = IDENT.match(s, i)
        if not m:
            i += 1
            continue
        word = m.group(0)
        i = m.end()
        rest = s[i:].lstrip()
        if rest.startswith("("):
            continue  # function or aggregation
        if word.lower() in KEYWORDS:
            continue
        names.append(word)
    return names


def families(text):
    """Metric family name -> type, from TYPE lines and sample lines."""
    fams = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                fams[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            name = IDENT.match(line)
            if name:
                fams.setdefault(name.group(0), "untyped")
    return fams


def present(name, fams):
    if name in fams:
        return True
    for suf in HIST_SUFFIXES:
        if name.endswith(suf) and fams.get(name[: -len(suf)]) in ("histogram", "summary"):
            return True
    return False


def main(argv):
    args, optional = [], []
    it = iter(argv[1:])
    for a in it:
        if a == "--optional":
            try:
                optional.append(re.compile(next(it)))
            except StopIteration:
                print("--optional needs a PATTERN", file=sys.stderr)
                return 2
        elif a.startswith("--optional="):
            optional.append(re.compile(a.split("=", 1)[1]))
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            args.append(a)
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            dashboard = json.load(f)
        if args[1] == "-":
            text = sys.stdin.read()
        else:
            with open(args[1], encoding="utf-8") as f:
                text = f.read()
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    fams = families(text)
    if not fams:
        print(f"error: {args[1]} holds no metrics", file=sys.stderr)
        return 2
    used = {}
    for title, e in exprs(dashboard):
        for n in metric_names(e):
            used.setdefault(n, set()).add(title)
    if not used:
        print(f"error: no metric names found in the queries of {args[0]}", file=sys.stderr)
        return 2

    missing, tolerated = [], []
    for n in sorted(used):
        if present(n, fams):
            continue
        if any(p.fullmatch(n) for p in optional):
            tolerated.append(n)
        else:
            missing.append(n)
    print(f"{len(used)} metric names in the dashboard queries, "
          f"{len(used) - len(missing) - len(tolerated)} exported, "
          f"{len(tolerated)} absent but optional, {len(missing)} missing")
    for n in tolerated:
        print(f"  optional, absent: {n}")
    for n in missing:
        print(f"MISSING: {n} (panels: {', '.join(sorted(used[n]))})", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
