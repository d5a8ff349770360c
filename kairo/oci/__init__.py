"""OCI as plain data: references, the adapter artifact's manifest and layout, and image layers read safely.

- `reference` — `registry/repo:tag@digest` parsed the way container tools read it.
- `artifact` — the adapter as an OCI artifact: media types, annotations, manifest, OCI image layout.
- `layers` — image layers read without running anything: whiteouts honoured, escapes refused.

Pure: no network. The registry client that moves these bytes is `kairo.clients.oci`.
"""
