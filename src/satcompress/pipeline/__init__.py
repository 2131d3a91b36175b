"""Putting the pieces together: base models, budgets, recipes, the recipe runner and the demo."""
