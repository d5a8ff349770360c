"""Hera builders: the tuning DAG, its WorkflowTemplate and the retraining CronWorkflow; the inference
DAG and its WorkflowTemplate.

`tuning.py` is the DAG (`inference.py` the inference workspace's); `templates.py` one function per step template; `pods.py` how pods are shaped;
`plan.py` the values both shapes (one workspace, or the generic template's parameters) fill in.
"""

from kairo.pipelines.cron import build_cron_workflow
from kairo.pipelines.workflows import (
    INFERENCE_TEMPLATE_NAME,
    KINDS,
    TEMPLATE_NAME,
    build_inference_workflow_template,
    build_workflow,
    build_workflow_template,
    render_objects,
)

__all__ = [
    "INFERENCE_TEMPLATE_NAME",
    "KINDS",
    "TEMPLATE_NAME",
    "build_cron_workflow",
    "build_inference_workflow_template",
    "build_workflow",
    "build_workflow_template",
    "render_objects",
]
