"""`titok-bench history`: one metric across commits, as a table and a plot; what regression tracking means.

    titok-bench history results/smoke-*.jsonl --metric images_per_sec --model titok_l32 [--plot l32.png]

One series per measurement (model, task, protocol) and environment, one point per commit (the commit's latest
record), commits in git's order (parents first) when `--repo` knows them all, else in the order they were first
measured. Each step is judged by `compare`'s rule against the commit before it, so a row says "REGRESSION" or
"machine loaded" exactly as `compare` would. The plot (matplotlib, headless Agg, PNG) draws each series with the
spread of its iterations (speed) or its recorded uncertainty (+-std) as error bars.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.records.compare import UNCHANGED, compare, summary_of
from bench.records.rules import rule_for
from bench.records.store import latest_records, measurement_key, read_records, record_time
from titok.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("history", help="a metric across commits (table and plot)")
    p.add_argument("results", nargs="+", help="results files (e.g. results/smoke-*.jsonl)")
    p.add_argument("--metric", required=True, help="metric name, e.g. images_per_sec, standin_rfid, gfid")
    p.add_argument("--model", action="append", help="only this model (repeatable)")
    p.add_argument("--plot", default=None, help="write the plot to this PNG file")
    p.add_argument("--repo", default=".", help="git repository that orders the commits (default: .)")
    p.set_defaults(func=run)


@dataclass
class Point:
    commit: str
    record: dict
    value: float | None
    low: float | None  # error bar, in the metric's units
    high: float | None
    verdict: str = ""  # compare's rule against the previous point


@dataclass
class Series:
    label: str
    points: list[Point]


@dataclass
class History:
    series: list[Series]
    commits: list[str]  # every commit shown, in order
    order: str  # how commits were ordered


def _git(repo: str | Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)


def commit_order(commits: list[str], first_seen: dict[str, float], repo: str | Path | None) -> tuple[list[str], str]:
    """Commits parents-first when the repository knows every one (a `-dirty` commit right after its clean one),
    else by when each was first measured; and which order was used."""
    clean = {c: c.removesuffix("-dirty") for c in commits}
    if repo is not None and all(_git(repo, "cat-file", "-e", f"{c}^{{commit}}").returncode == 0
                                for c in set(clean.values())):
        full = {c: _git(repo, "rev-parse", c).stdout.strip() for c in set(clean.values())}
        listed = _git(repo, "rev-list", "--topo-order", "--reverse", *sorted(set(full.values())))
        if listed.returncode == 0:
            position = {sha: i for i, sha in enumerate(listed.stdout.split())}
            return sorted(commits, key=lambda c: (position[full[clean[c]]], c.endswith("-dirty"))), "git order"
    return sorted(commits, key=lambda c: (first_seen[c], c)), "order first measured (commits unknown to git)"


def _value_and_bar(rec: dict, metric: str) -> tuple[float | None, float | None, float | None]:
    raw = rec["metrics"].get(metric)
    value = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    if value is None or rec.get("error"):
        return None, None, None
    spread = (rec.get("spreads") or {})
    if metric == "images_per_sec":
        it = spread.get("sec_per_batch") or {}
        bs = rec["protocol"].get("batch_size_used") or rec["protocol"].get("batch_size")
        low_s = it.get("min", rec["metrics"].get("sec_per_batch_min"))
        high_s = it.get("max", rec["metrics"].get("sec_per_batch_max"))
        n = it.get("n", rec["protocol"].get("iters") or 0)
        if n >= 2 and bs and isinstance(low_s, (int, float)) and isinstance(high_s, (int, float)) and low_s > 0:
            return value, bs / high_s, bs / low_s
    std = (spread.get(metric) or {}).get("std")
    if isinstance(std, (int, float)):
        return value, value - std, value + std
    return value, None, None


def build_history(records: list[dict], metric: str, models: list[str] | None = None,
                  repo: str | Path | None = None) -> History:
    """Series of `metric` across commits, one per measurement and environment."""
    if rule_for(metric) is None:
        raise InputError(f"unknown metric {metric!r}; known: see bench/records/rules.py")
    chosen = [r for r in records if (not models or r["model"] in models)
              and (metric in r["metrics"] or r.get("error"))]
    measured = {measurement_key(r) for r in chosen if metric in r["metrics"]}
    chosen = [r for r in chosen if measurement_key(r) in measured]
    if not chosen:
        raise InputError(f"no record measures {metric!r}" + (f" for {', '.join(models)}" if models else ""))
    first_seen: dict[str, float] = {}
    for r in chosen:
        first_seen[r["git_commit"]] = min(first_seen.get(r["git_commit"], float("inf")), record_time(r))
    order, how = commit_order(sorted(first_seen), first_seen, repo)
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in chosen:
        env = (r["env"].get("device_name"), r["env"].get("threads"), r["env"].get("torch"))
        groups.setdefault((measurement_key(r), env), {}).setdefault(r["git_commit"], []).append(r)
    series = []
    for (_, env), by_commit in groups.items():
        points = []
        for commit in (c for c in order if c in by_commit):
            rec = max(latest_records(by_commit[commit]), key=record_time)
            points.append(Point(commit, rec, *_value_and_bar(rec, metric)))
        for prev, point in zip(points, points[1:], strict=False):
            rows = [row for row in compare([point.record], [prev.record]).rows if row.metric in (metric, "")]
            point.verdict = rows[0].verdict if rows else ""
        first = points[0].record
        label = f"{first['model']} {first['task']} {summary_of(first)} [{env[0]}, {env[1]} threads, torch {env[2]}]"
        series.append(Series(label, points))
    series.sort(key=lambda s: s.label)
    return History(series, order, how)


def render_table(series: list[Series], metric: str) -> str:
    lines = []
    for s in series:
        lines.append(s.label)
        lines.append(f"  {'commit':<14} {'date':<20} {metric:>14} {'range':>21}  vs previous")
        prev = None
        for p in s.points:
            value = "error" if p.value is None else f"{p.value:.4g}"
            bar = f"{p.low:.4g}..{p.high:.4g}" if p.low is not None else ""
            change = ""
            if prev is not None and p.value is not None and prev.value:
                verdict = p.verdict if p.verdict != UNCHANGED else ""
                change = f"{(p.value - prev.value) / abs(prev.value):+.1%} {verdict}"
            lines.append(f"  {p.commit[:12]:<14} {p.record['time'][:19]:<20} {value:>14} {bar:>21}  {change.strip()}")
            prev = p
    return "\n".join(lines)


def plot_history(history: History, metric: str, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on benchmark machines
    import matplotlib.pyplot as plt

    order = history.commits
    x_of = {c: i for i, c in enumerate(order)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(order) + 3), 4.5))
    for s in history.series:
        pts = [p for p in s.points if p.value is not None]
        xs, ys = [x_of[p.commit] for p in pts], [p.value for p in pts]
        lower = [p.value - p.low if p.low is not None else 0.0 for p in pts]
        upper = [p.high - p.value if p.high is not None else 0.0 for p in pts]
        ax.errorbar(xs, ys, yerr=[lower, upper], marker="o", capsize=3, label=s.label)
    ax.set_xticks(range(len(order)), [c[:8] for c in order], rotation=45, ha="right")
    ax.set_xlabel(f"commit ({history.order})")
    ax.set_ylabel(metric)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the plot: never over data
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def run(args) -> int:
    res = read_records(args.results)
    for p in res.problems:
        print(f"skipped {p}", file=sys.stderr)
    history = build_history(res.records, args.metric, args.model, args.repo)
    print(f"{args.metric} across {len(history.commits)} commits ({history.order})")
    print(render_table(history.series, args.metric))
    if args.plot:
        print(f"plot -> {plot_history(history, args.metric, args.plot)}")
    return 0
