"""The only modules that talk to Kubernetes, Azure and OCI registries: one choke point to the world each.

- `oci` (with its transport half `oci_transport`) — registries: push and pull adapters, datasets and models,
  move tags; every call takes a `kairo.oci.access.RegistryAccess`.
- `kube` — the Kubernetes API (server-side apply, reads, waits); `rollout` — a Deployment rolled out and
  watched; `workspaces` — the `workspaces.kaito.sh` objects and their status.
- `azure` — AKS agent pools through the Azure SDK, with its long-running operations.
- `argo` — the Argo Server API (submit, watch).

Imported by steps, commands and the server; never by the pure packages below them (docs/architecture.md).
"""
