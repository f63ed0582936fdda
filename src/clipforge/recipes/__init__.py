"""Recipes: the CIFAR-10 demo (`demo.py`) and small-scale reproductions of the paper's findings (`experiments/`).

They use the library (models, data, train, zeroshot, evaluate) like any user would; nothing in the library
imports them. `clipforge demo` and `clipforge experiment` call into them, and importing
`clipforge.recipes.experiments.objectives` registers its objectives with the trainer.
"""
