"""The inference server: a base model plus LoRA adapters behind Kaito's `/chat` and the OpenAI API.

`options` (flags → ServerConfig) is light to import; `app` builds the FastAPI application, `models`
loads the weights, `batching` runs concurrent requests as one `generate` call, `metrics` counts for
Prometheus. `kairo serve` and `kairo-step serve` both end in `server.run`.
"""
