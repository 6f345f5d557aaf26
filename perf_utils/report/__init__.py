"""Showing records and verdicts: terminal and Markdown tables, the report folder and its figures. No torch."""
