"""Kubernetes objects as plain data, built by pure functions and checked by value in the tests.

- `inference` — the inference Deployment and Service of a workspace, and the record of what is deployed.
- `nodes` — the AKS agent pool and Karpenter NodeClaims a workspace asks for, and the verdict on nodes.
- `conditions` — the Workspace status Kaito users read (ResourceReady, InferenceReady, WorkspaceSucceeded).
- `crd` — the `workspaces.kaito.sh` CustomResourceDefinition, generated from `kairo.spec`.

Pure: imports no client library. `kairo.clients` sends these objects; steps and commands build them.
"""
