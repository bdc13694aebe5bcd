"""The authoring layer: flows, tasks, parameters, states and their names
(`states.StateName`, the one vocabulary of state names), signals, triggers,
mapping, context, results, schedules, labels, and the checks of what users give
(`validation`).

Nothing here runs a flow or touches the database, and nothing here imports
anything above it (`tests/test_layers.py`): `orchestrator.engine` runs what this
layer describes; what a flow needs from above (`flow.run()`, `flow.register()`,
...) it reaches through `ports`, which the package root fills.
"""
