"""Long-running components (agent; later scheduler and reaper). Each has
`run_once(now=None)` doing one step, and `run()` looping over it."""
