"""planner: write, validate, render and verify an LLM gateway roadmap."""

__version__ = "0.1.0"
