"""Argo's own rules, as executable checks: what Argo's controller, server and API server would refuse.

- `checker` — the one checker: `check(obj, versions=…) -> list[Problem]`, `refuse(objects)` raises InvalidInput.
- `schema` — the CRDs kairo's objects must fit (Argo's full CRDs made strict, JobSet, Kubeflow Trainer).
- `cel` — the CRDs' CEL rules (`x-kubernetes-validations`), evaluated where the API server evaluates them.
- `validate`, `dag`, `rules` — Argo's `workflow/validate/validate.go`, ported; `runtime` — the controller's
  run-time rules (`when`, `depends`, retry expressions, podSpecPatch, locks, claims).
- `refs` — every `{{…}}` of an Argo object resolves, where Argo would resolve it.
- `expr` — the expressions Argo evaluates in `when`, `depends` and `retryStrategy.expression`.
- `versions` — the Argo versions kairo claims and the fields each knows.

Pure: imports no client library; used by `kairo.pipelines` (render, submit, schedule refuse what Argo would),
`kairo.local` (the runner refuses the same) and the tests.
"""

from kairo.argo.checker import check, refuse

__all__ = ["check", "refuse"]
