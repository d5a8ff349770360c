"""`kairo run --local`: the rendered Workflow executed on this machine.

- `runner` — the DAG run as Argo runs it (parameters, depends/when, retries, continueOn, nested DAGs, onExit),
  each task's container command a local process; `support` refuses what it cannot run before it starts.
- `tasks` — the state of one run; `policy` — retries, deadlines and stopping; `mounts` — volumes as folders.
- `view` — the live table or plain log lines.
- `server` — the inference server `deploy --local` leaves running, found and stopped again by other steps.

Uses `kairo.argo` for Argo's rules; imports no client library. Used by `kairo run` and the local-mode
branches of the deploy, deployed and cleanup steps (`server`).
"""
