"""OCI as plain data: references, the adapter image's manifest and layout, and image layers read safely.

- `reference` — `registry/repo:tag@digest` parsed the way container tools read it.
- `access` — how one registry is reached (credentials file, plain HTTP, retries), decided once.
- `artifact` — the adapter as an OCI image in Kaito's layout: annotations, manifest, OCI image layout.
- `image` — the adapter image's one reproducible `data/` layer and its image config.
- `layers` — image layers read without running anything: whiteouts honoured, escapes refused.

Pure: no network. The registry client that moves these bytes is `kairo.clients.oci`.
"""
