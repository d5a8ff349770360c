"""Datasets: fetching them safely and reading every accepted shape into chat conversations.

- `fetch` — one HTTP(S) file streamed to disk: retries, limits, digest; every hop checked by `netguard`.
- `netguard` — which addresses a dataset URL may reach (no SSRF into the cluster or the cloud).
- `datafiles` — files read row by row: parquet, JSON Lines, JSON, CSV/TSV, Arrow, compressed text.
- `datasets` — rows of any accepted shape → `messages`, and the train/eval split;
  `turns` (a cell as chat turns) and `message_trees` (OpenAssistant's trees) are its parts.
- `sample_data` — the small Q&A dataset shipped in examples/data/.

Pure but for the network in `fetch`: imports no client library, no torch. Used by the download step,
`kairo validate` (URL checks) and the tests.
"""
