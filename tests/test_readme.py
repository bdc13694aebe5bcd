"""The README's examples run as written."""

import re

from helpers import ROOT


def python_blocks(section_title):
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {section_title}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_ten_line_example_runs_and_maps_over_the_given_cities():
    (source,) = python_blocks("A flow in ten lines")
    assert len([line for line in source.splitlines() if line.strip()]) <= 14
    namespace = {}
    exec(compile(source, "README.md", "exec"), namespace)

    state, flow = namespace["state"], namespace["flow"]
    assert state.is_successful(), state
    (fetch,) = flow.get_tasks(name="fetch")
    assert state.result[fetch].result == [{"city": "Pune", "temp": 21}]
