"""A/B of a benchmark: one of the scripts/bench_*.py run against this checkout
and against a baseline commit, alternately, its figures side by side.

    python scripts/bench_ab.py --baseline 7ef007e --rounds 3 -- scripts/bench_store.py --repeat 3

The baseline is checked out in a temporary git worktree; each round runs the
benchmark once per side (the order alternating from round to round, so a
machine that warms up or slows down favours neither), with PYTHONPATH set to
that side's tree, so the benchmark and every `orchestrator` process it starts
import that side's package. The benchmark script itself is this checkout's,
so both sides are measured the same way. Prints each figure of the script's
JSON as the median over the rounds, baseline beside new, and writes them to
bench-results/ab-<script>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import write_json

ROOT = Path(__file__).resolve().parent.parent


def run_side(tree, script, args, json_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tree)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    # Run in the side's tree: `python -m orchestrator` puts the working folder
    # first on sys.path, before PYTHONPATH.
    done = subprocess.run([sys.executable, str(script), *args, "--json", str(json_path)],
                          cwd=tree, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script.name} failed on {tree} (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(Path(json_path).read_text())


def numbers(figures, prefix=""):
    """The numbers in a benchmark's JSON, nested objects' under dotted keys, and
    those of a list of objects that name themselves ("label", "name", "key" or
    "graph") under the name."""
    found = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            seen = {}
            for item in value:
                name = next((item[k] for k in ("label", "name", "key", "graph") if k in item), None)
                if name is None:
                    continue
                seen[name] = seen.get(name, 0) + 1
                if seen[name] > 1:  # cases named alike (other client counts): number them
                    name = f"{name} #{seen[name]}"
                found.update(numbers(item, f"{prefix}{key}[{name}]."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[prefix + key] = value
    return found


def _shown(value):
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", help="a scripts/bench_*.py, then its own arguments after --")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    script = (ROOT / args.script).resolve() if not Path(args.script).is_absolute() \
        else Path(args.script)
    script_args = [a for a in args.script_args if a != "--"]

    with tempfile.TemporaryDirectory(prefix="orchestrator-ab-") as scratch:
        baseline_tree = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline_tree),
                        args.baseline], cwd=ROOT, check=True, capture_output=True)
        try:
            sides = {"baseline": baseline_tree, "new": ROOT}
            figures = {"baseline": [], "new": []}
            for round_ in range(args.rounds):
                order = ["baseline", "new"] if round_ % 2 == 0 else ["new", "baseline"]
                for side in order:
                    out = Path(scratch) / f"{side}-{round_}.json"
                    figures[side].append(numbers(run_side(sides[side], script,
                                                          script_args, out)))
                    print(f"round {round_ + 1}/{args.rounds}: {side} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline_tree)],
                           cwd=ROOT, capture_output=True)

    keys = [k for k in figures["new"][0] if k in figures["baseline"][0]]
    results = {"script": script.name, "arguments": script_args, "baseline": args.baseline,
               "rounds": args.rounds, "figures": {}}
    width = max(len(k) for k in keys)
    print(f"{'figure (median of ' + str(args.rounds) + ' rounds)':<{width}}  "
          f"{'baseline':>12}  {'new':>12}  {'new/base':>8}")
    for key in keys:
        base = statistics.median(f[key] for f in figures["baseline"])
        new = statistics.median(f[key] for f in figures["new"])
        ratio = new / base if base else float("nan")
        results["figures"][key] = {"baseline": base, "new": new, "ratio": ratio}
        print(f"{key:<{width}}  {_shown(base):>12}  {_shown(new):>12}  {ratio:>8.2f}")
    out = write_json(ROOT / "bench-results" / f"ab-{script.stem}.json", results)
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
