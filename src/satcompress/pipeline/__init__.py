"""Putting the pieces together: base models, and (later) recipes, budgets and the runner."""
