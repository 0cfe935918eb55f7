"""Filled in by a later issue; see ../shared/design/ARCHITECTURE.md."""
