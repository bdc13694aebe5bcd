"""Shell steps around a small file drop: count lines, list files, checksum.

Each step is a ShellTask; the last one is expected to fail (the archive
folder does not exist), and `notify_ops` runs only when something failed.
"""
import os

from prefect import Flow, Parameter, task
from prefect.storage import Docker
from prefect.tasks.shell import ShellTask
from prefect.triggers import any_failed

HERE = os.path.dirname(os.path.abspath(__file__))

count_lines = ShellTask(
    name="count lines",
    helper_script=f'cd "{HERE}/inputs"',
)
list_inputs = ShellTask(
    name="list inputs",
    command="ls -1 | sort",
    helper_script=f'cd "{HERE}/inputs"',
    return_all=True,
)
greet = ShellTask(name="greet", env={"GREETING": "hello from the shell"})
archive = ShellTask(name="archive", command="ls /definitely/not/here/archive")


@task(trigger=any_failed)
def notify_ops():
    return "ops paged"


@task
def wc_command(file_name):
    return f"wc -l {file_name}"


@task
def parse_count(line):
    return int(line.split()[0])


with Flow("shell-steps") as flow:
    csv_name = Parameter("csv_name", default="orders.csv")
    raw = count_lines(command=wc_command(csv_name))
    rows = parse_count(raw)
    names = list_inputs()
    hello = greet(command='echo "$GREETING"')
    archived = archive(upstream_tasks=[rows, names, hello])
    notify_ops(upstream_tasks=[archived])

flow.storage = Docker(
    registry_url="registry.example.test/data",
    image_name="shell-steps",
    python_dependencies=["requests"],
)
