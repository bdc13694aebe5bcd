"""Start-up cost of the single-file build (dist/orchestrator.pyz) beside the
virtualenv install: the file's size, `--help`, and `up` from start to a healthy
/api/health, each the median of several runs in a fresh home.

    .venv/bin/python scripts/bench_single_file.py            # builds the .pyz if missing
    .venv/bin/python scripts/bench_single_file.py --runs 9 --python /usr/bin/python3
    .venv/bin/python scripts/bench_single_file.py --exe dist/orchestrator-linux-x86_64

The .pyz's first start on a box unpacks it under ~/.shiv: measured apart
("first start"), each time in a new HOME; later starts reuse that folder.
Results go to bench-results/single_file.json as well.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchkit import print_rows, write_json

ROOT = Path(__file__).resolve().parent.parent
API_LINE = re.compile(r"API:\s+(http://127\.0\.0\.1:\d+)/api/health")


def timed(argv, env):
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def up_to_healthy(argv, env, folder):
    """Seconds from spawning `up` to a 200 from /api/health; then SIGTERM."""
    out = Path(folder) / f"up-{time.monotonic_ns()}.out"
    start = time.perf_counter()
    with open(out, "w") as sink:
        proc = subprocess.Popen([*argv, "up", "--port", "0"], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while True:
            found = API_LINE.search(out.read_text())
            if found:
                try:
                    with urllib.request.urlopen(found.group(1) + "/api/health", timeout=5) as r:
                        if r.status == 200:
                            return time.perf_counter() - start
                except (urllib.error.URLError, ConnectionError):
                    pass
            if proc.poll() is not None or time.perf_counter() - start > 60:
                raise SystemExit(f"{argv} up never got healthy:\n{out.read_text()}")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pyz", default=str(ROOT / "dist" / "orchestrator.pyz"))
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="the interpreter that runs the .pyz (default: the system's)")
    parser.add_argument("--exe", help="also time this self-contained executable "
                        "(scripts/build-exe), e.g. dist/orchestrator-linux-x86_64")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "single_file.json"))
    args = parser.parse_args()
    pyz = Path(args.pyz)
    if not pyz.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "build"), str(pyz)], check=True)
    venv_cli = [str(ROOT / ".venv" / "bin" / "orchestrator")]
    pyz_cli = [args.python, str(pyz)]

    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-pyz-") as tmp:
        tmp = Path(tmp)
        box_home = tmp / "box"  # one HOME for the warm .pyz runs: unpacked once
        box_home.mkdir()
        base = {"PATH": "/usr/bin:/bin", "HOME": str(box_home), "LANG": "C.UTF-8"}

        def env_for(name):
            home = tmp / f"home-{name}-{time.monotonic_ns()}"
            return dict(base, ORCHESTRATOR_HOME=str(home))

        timed([*pyz_cli, "--version"], base)  # unpack once for the warm runs
        figures = {"python": subprocess.run([args.python, "--version"], capture_output=True,
                                            text=True, check=True).stdout.strip(),
                   "runs": args.runs, "pyz_bytes": pyz.stat().st_size}
        samples = {key: [] for key in ("venv_help", "pyz_help", "pyz_help_first",
                                       "venv_up", "pyz_up", "pyz_up_first")}
        if args.exe:
            samples.update(exe_help=[], exe_up=[])
        for _ in range(args.runs):
            if args.exe:
                samples["exe_help"].append(timed([args.exe, "--help"], env_for("e")))
                samples["exe_up"].append(up_to_healthy([args.exe], env_for("e"), tmp))
            samples["venv_help"].append(timed([*venv_cli, "--help"], env_for("v")))
            samples["pyz_help"].append(timed([*pyz_cli, "--help"], env_for("p")))
            fresh = tmp / f"fresh-{time.monotonic_ns()}"
            fresh.mkdir()
            samples["pyz_help_first"].append(
                timed([*pyz_cli, "--help"], dict(env_for("f"), HOME=str(fresh))))
            samples["venv_up"].append(up_to_healthy(venv_cli, env_for("v"), tmp))
            samples["pyz_up"].append(up_to_healthy(pyz_cli, env_for("p"), tmp))
            fresh = tmp / f"fresh-{time.monotonic_ns()}"
            fresh.mkdir()
            samples["pyz_up_first"].append(
                up_to_healthy(pyz_cli, dict(env_for("f"), HOME=str(fresh)), tmp))
        unpacked = sum(p.stat().st_size for p in (box_home / ".shiv").rglob("*") if p.is_file())
        figures["unpacked_bytes"] = unpacked
        for key, values in samples.items():
            figures[f"{key}_median_s"] = round(statistics.median(values), 3)

    rows = [("python running the .pyz", figures["python"]),
            (".pyz size", f"{figures['pyz_bytes'] / 1e6:.1f} MB"),
            ("unpacked under ~/.shiv (after use)", f"{unpacked / 1e6:.1f} MB"),
            (f"--help, venv (median of {args.runs})", f"{figures['venv_help_median_s']:.3f} s"),
            ("--help, .pyz", f"{figures['pyz_help_median_s']:.3f} s"),
            ("--help, .pyz first start (unpacks)", f"{figures['pyz_help_first_median_s']:.3f} s"),
            ("up to healthy, venv", f"{figures['venv_up_median_s']:.3f} s"),
            ("up to healthy, .pyz", f"{figures['pyz_up_median_s']:.3f} s"),
            ("up to healthy, .pyz first start", f"{figures['pyz_up_first_median_s']:.3f} s")]
    if args.exe:
        figures["exe_bytes"] = Path(args.exe).stat().st_size
        rows += [("executable size", f"{figures['exe_bytes'] / 1e6:.1f} MB"),
                 ("--help, executable", f"{figures['exe_help_median_s']:.3f} s"),
                 ("up to healthy, executable", f"{figures['exe_up_median_s']:.3f} s")]
    print_rows(rows)
    print(f"written to {write_json(args.out, figures)}")
    return json.dumps(figures)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(0 if main() else 1)
