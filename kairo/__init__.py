"""kairo: Kaito-style LLM fine-tuning on Kubernetes, every run an Argo Workflow built with Hera."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kairo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
