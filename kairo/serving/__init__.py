"""The inference server: a base model plus LoRA adapters behind Kaito's `/chat` and the OpenAI API.

`options` (flags → ServerConfig) is light to import. `app` builds the FastAPI application and its guard
(bearer token, body size, request metrics); `kaito_routes` and `openai_routes` answer; `state` holds what
they share and the checks every request passes; `models` loads the weights and adapters; `batching` runs
concurrent requests as one `generate` call; `metrics` counts for Prometheus; `errors` shapes refusals.
`kairo serve` and `kairo-step serve` both end in `server.run`.
"""
