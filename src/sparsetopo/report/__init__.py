"""Figures and reports: one function per figure, the claims table, HTML/Markdown output."""
