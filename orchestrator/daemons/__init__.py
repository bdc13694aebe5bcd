"""The long-running loops: the agent, the scheduler, the reaper and the
leadership that elects one scheduler and one reaper per database. Each has
`run_once(now=None)` doing one step, and `run()` looping over it; `orchestrator
up` (orchestrator.cli.up) runs them in one process, `orchestrator agent` and
`orchestrator scheduler` one each."""
