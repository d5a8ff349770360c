"""The only modules that talk to Kubernetes, Azure and OCI registries."""
