"""The engine: runs a flow's tasks on an executor and produces their states.

It never imports the store; a backend run hands it a `Reporter`.
"""
