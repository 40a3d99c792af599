"""Placeholder for the report layer; see ../shared/DESIGN.md and the open issues."""
