"""Fault tests: real servers, real processes, a real fault in the middle of a sale."""
