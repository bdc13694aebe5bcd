"""Coming from Prefect 1: the name table (`prefect1.names`: every Prefect 1
name and where it lives here), `orchestrator migrate` (`prefect1.migrate`) and
the import switch that serves `import prefect` in flow files
(`prefect1.imports`)."""
