"""Exit codes shared by every step, so Argo retry expressions can tell mistakes from accidents.

A step that exits with BAD_INPUT failed because of what the user wrote (spec, config, data):
retrying cannot help. TRANSIENT means the network, a registry or the cluster failed us and a
retry may succeed. Anything else (a crash, a signal) is treated like TRANSIENT by the retry
policies only where a step is known to resume safely.
"""

OK = 0
FAILED = 1
BAD_INPUT = 2
TRANSIENT = 75  # EX_TEMPFAIL from sysexits.h
SKIPPED = 0

# Argo retryStrategy.expression: retry unless the step said the input is bad.
RETRY_UNLESS_BAD_INPUT = f"asInt(lastRetry.exitCode) != {BAD_INPUT}"
