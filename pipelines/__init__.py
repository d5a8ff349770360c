"""Hera builders: the tuning DAG, its WorkflowTemplate and the retraining CronWorkflow."""
