"""Placeholder for the execute layer; see ../shared/DESIGN.md and the open issues."""
