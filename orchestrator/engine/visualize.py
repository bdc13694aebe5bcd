"""Drawing a flow: Graphviz DOT text, rendered when the graphviz package is there."""

from ..exceptions import OrchestratorError

__all__ = ["flow_to_dot", "render"]


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def flow_to_dot(flow, flow_state=None):
    """DOT text for `flow`; with a finished run's state, nodes are coloured by state."""
    flow.validate()
    states = flow_state.result if flow_state is not None and isinstance(
        flow_state.result, dict) else {}
    ids = {t: f"t{i}" for i, t in enumerate(flow.sorted_tasks())}
    lines = [f"digraph {_quote(flow.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#ffffff"];']
    for t, node in ids.items():
        attrs = {"label": t.name}
        if type(t).__name__ == "Parameter":
            attrs["shape"] = "ellipse"
        state = states.get(t)
        if state is not None:
            attrs["fillcolor"] = state.color
            attrs["tooltip"] = type(state).__name__
        body = ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items())
        lines.append(f"  {node} [{body}];")
    for t in ids:
        for e in flow._upstream[t]:
            attrs = {}
            if e.key:
                attrs["label"] = e.key
            if e.mapped:
                attrs["style"] = "dashed"
            body = (" [" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "]"
                    ) if attrs else ""
            lines.append(f"  {ids[e.upstream_task]} -> {ids[t]}{body};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot, filename, format="pdf"):
    """Render DOT text to `filename`.`format`; returns the written path."""
    try:
        import graphviz
    except ImportError:
        raise OrchestratorError(
            "Rendering a flow needs the graphviz package (pip install graphviz) and "
            "Graphviz's dot program; without them, visualize() still returns DOT text"
        ) from None
    try:
        return graphviz.Source(dot).render(filename, format=format, cleanup=True)
    except graphviz.ExecutableNotFound:
        raise OrchestratorError(
            "Graphviz's dot program is not installed (apt-get install graphviz); "
            "without it, visualize() still returns DOT text"
        ) from None
