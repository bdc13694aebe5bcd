"""The authoring layer: flows, tasks, parameters, states, signals, triggers.

Nothing here runs a flow or touches the database; `orchestrator.engine` runs
what this layer describes.
"""
