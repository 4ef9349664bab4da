"""Each algorithm's torch-free config schema: its fields, its own checks and the facts the loop asks about.

One module per algorithm (plus ``base`` for what every algorithm, or every group-sampling one, shares).
drl/algorithms/__init__.py's registry pairs each schema with the classes that run it.
"""
