"""`kairo run --local`: the rendered Workflow executed on this machine."""
