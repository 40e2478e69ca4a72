"""trickopt: which training tricks help your model, and how much.

The trick modules (`trickopt.tricks`), the models, the data loaders and the training loop
(`trickopt.train`) depend on torch, numpy and scikit-learn only. Optuna is imported by
`trickopt.study` alone; MLflow only in the tracking process that `trickopt.tracking` starts
(`trickopt._mlflow_writer`).
"""

__version__ = "0.1.0"
