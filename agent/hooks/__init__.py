"""The allocation runner's and task runner's hooks: one file per concern (see base.py)."""
