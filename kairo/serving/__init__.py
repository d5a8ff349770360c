"""The inference server: a base model plus LoRA adapters behind Kaito's `/chat` and the OpenAI API.

`options` (flags → ServerConfig) is light to import. `app` builds the FastAPI application and its guard
(bearer token, body size, request metrics); `kaito_routes`, `openai_routes` and `responses_routes` (OpenAI's
Responses API) answer; `state` holds what they share and the checks every request passes (the per-request
work bound among them); `models` loads the weights and adapters; `batching` runs
concurrent requests, whatever adapter each asks for, as one `generate` call, and `mixed_lora` stacks the
adapters' LoRA weights so that rows of several cost what rows of one do; `switching` loads a newly
declared adapter beside the served one and switches to it without a restart, `watcher` applies the watched
adapters file (the mounted ConfigMap) and `admin_routes` vLLM's load/unload routes; `metrics` counts for
Prometheus; `errors` shapes refusals.
`kairo serve` and `kairo-step serve` both end in `server.run`.
"""
