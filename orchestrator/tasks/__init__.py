"""Library tasks: secrets and flow-run tasks, as in Prefect 1's task library."""
