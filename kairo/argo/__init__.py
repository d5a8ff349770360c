"""Argo's own rules, as executable checks: what Argo's controller, server and API server would refuse.

- `expr` — the expressions Argo evaluates in `when`, `depends` and `retryStrategy.expression`.
- `refs` — every `{{…}}` of an Argo object resolves, where Argo would resolve it.

Pure: imports no client library; used by `kairo.pipelines` (render, submit, schedule refuse what Argo would),
`kairo.local` (the runner refuses the same) and the tests.
"""
