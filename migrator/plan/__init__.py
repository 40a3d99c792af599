"""Placeholder for the plan layer; see ../shared/DESIGN.md and the open issues."""
