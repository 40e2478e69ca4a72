"""trickopt: which training tricks help your model, and how much.

The trick modules (`trickopt.tricks`), the models, the data loaders and the training loop
(`trickopt.train`) depend on torch, numpy and scikit-learn only. Optuna is imported by
`trickopt.study` alone, MLflow by `trickopt.tracking` alone.
"""

__version__ = "0.1.0"
