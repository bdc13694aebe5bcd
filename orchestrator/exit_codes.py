"""The exit codes of the `orchestrator` command, which scripts and agents rely on."""

OK = 0
RUN_FAILED = 1         # the run failed (when the command waited for it)
BAD_INPUT = 2          # a bad input, said in one line; nothing was stored
STORE_UNAVAILABLE = 3  # the store cannot be written now (disk full, no free connection)
TAKEN_OVER = 4         # `execute`: another attempt owns the run now; this process stopped
