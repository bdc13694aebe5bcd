"""Daily sales report: read every CSV in data/sales, total each region in
parallel (one mapped task per file), and write a summary.

Run it: orchestrator run-file data/flows/sales_report.py --param day=2024-05-01
"""

import csv
import datetime as dt
import json
from pathlib import Path

from orchestrator import Flow, Parameter, get_logger, task, unmapped
from orchestrator.executors import LocalDaskExecutor

DATA = Path(__file__).resolve().parent.parent / "sales"


@task
def list_files(folder):
    files = sorted(str(p) for p in Path(folder).glob("*.csv"))
    get_logger().info("found %d files in %s", len(files), folder)
    return files


@task(max_retries=2, retry_delay=dt.timedelta(seconds=1))
def total_region(path, day):
    rows = list(csv.DictReader(open(path, newline="")))
    total = sum(float(r["amount"]) for r in rows if r["day"] == day)
    return {"region": Path(path).stem, "total": round(total, 2)}


@task(log_stdout=True)
def summarize(totals, day, out_dir):
    report = {"day": day, "regions": totals,
              "total": round(sum(t["total"] for t in totals), 2)}
    out = Path(out_dir) / f"sales-{day}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{day}: {report['total']} over {len(totals)} regions -> {out}")
    return report


with Flow("sales-report", executor=LocalDaskExecutor("threads")) as flow:
    day = Parameter("day", default=lambda: dt.date.today().isoformat())
    folder = Parameter("folder", default=str(DATA))
    out_dir = Parameter("out_dir", default=str(DATA.parent / "out"))
    totals = total_region.map(list_files(folder), unmapped(day))
    summarize(totals, day, out_dir)
