"""Placeholder for the detect layer; see ../shared/DESIGN.md and the open issues."""
