"""Against the idiomatic objective: `python -m trickopt.study` and the Optuna objective users
write today, for the same budget: whole command and optimize phase.

Budget: digits (60/20/20 stratified, seed 0, z-scored on train), 100 trials of <= 10 epochs,
batch 128, TPE seed 0, MedianPruner, an MLP of 1-3 layers of 4-128 units, dropout 0.2-0.5, lr
1e-5-1e-1 log-uniform. Each command runs in a fresh temporary folder, the order rotating.

* (a) `--objective`: Optuna's pytorch_simple.py example line for line, on digits: a shuffled
  DataLoader, a `.sum().item()` per validation batch, report + should_prune each epoch,
  in-memory storage, no tracking, Adam / RMSprop / SGD, a width and dropout per layer; plus
  the split above, a seeded TPE, `torch.manual_seed(0)` and no timeout, to share the budget.
* (b) `python -m trickopt.study benchmarks/idiomatic_budget.yaml`: MLflow tracking on (a fresh
  ./mlflow.db), journal storage, progress bar, refit train_val; sgd / adam / adamw.
* (b') = (b) + `--set KEY=VALUE` for each --also, e.g. tracking.enabled=false.
* (b'') = (b) run with the trickopt of another checkout (`--before DIR`, e.g. a
  `git worktree add DIR COMMIT`): a change's before and after, side by side.

Run:
    python benchmarks/idiomatic.py --repeats 5 --also tracking.enabled=false
    python benchmarks/idiomatic.py --repeats 6 --before /tmp/before   # a worktree of COMMIT
    python benchmarks/idiomatic.py --quick       # 3 trials of 2 epochs, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import HERE, compare_commands, machine_facts, study_command

STARTED = time.perf_counter()
BUDGET = HERE / "idiomatic_budget.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=100, help="trials per study (100)")
    parser.add_argument("--epochs", type=int, default=10, help="max epochs per trial (10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (3)")
    parser.add_argument("--also", action="append", default=[], metavar="KEY=VALUE",
                        help="also run (b') = (b) + --set KEY=VALUE (repeatable)")
    parser.add_argument("--before", metavar="DIR",
                        help="also run (b) with the trickopt of the checkout in DIR")
    parser.add_argument("--objective", action="store_true",
                        help="run side (a) itself, once, in this process")
    parser.add_argument("--quick", action="store_true", help="3 trials of 2 epochs, R=1")
    args = parser.parse_args()
    if args.quick:
        args.n_trials, args.epochs, args.repeats = 3, 2, 1
    if min(args.n_trials, args.epochs, args.repeats) < 1:
        parser.error(f"--n-trials, --epochs, --repeats must be >= 1; got {vars(args)}")
    return args


def idiomatic_objective(n_trials: int, epochs: int) -> None:
    """Side (a): optuna-examples' pytorch/pytorch_simple.py, ported to digits."""
    import optuna
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
    import torch.utils.data
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    device = torch.device("cpu")
    x, y = load_digits(return_X_y=True)
    x_rest, _, y_rest, _ = train_test_split(x.astype("float32"), y, test_size=0.2, stratify=y,
                                            random_state=0)
    x_train, x_valid, y_train, y_valid = train_test_split(x_rest, y_rest, test_size=0.25,
                                                          stratify=y_rest, random_state=0)
    scaler = StandardScaler().fit(x_train)
    train, valid = (torch.utils.data.TensorDataset(
        torch.tensor(scaler.transform(a), dtype=torch.float32), torch.tensor(b))
        for a, b in ((x_train, y_train), (x_valid, y_valid)))

    def define_model(trial):
        n_layers = trial.suggest_int("n_layers", 1, 3)
        layers, in_features = [], 8 * 8
        for i in range(n_layers):
            out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
            layers += [nn.Linear(in_features, out_features), nn.ReLU(),
                       nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.2, 0.5))]
            in_features = out_features
        return nn.Sequential(*layers, nn.Linear(in_features, 10), nn.LogSoftmax(dim=1))

    def objective(trial):
        model = define_model(trial).to(device)
        optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        optimizer = getattr(optim, optimizer_name)(model.parameters(), lr=lr)
        train_loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
        valid_loader = torch.utils.data.DataLoader(valid, batch_size=128, shuffle=True)
        for epoch in range(epochs):
            model.train()
            for data, target in train_loader:
                data, target = data.view(data.size(0), -1).to(device), target.to(device)
                optimizer.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in valid_loader:
                    data, target = data.view(data.size(0), -1).to(device), target.to(device)
                    pred = model(data).argmax(dim=1, keepdim=True)
                    correct += pred.eq(target.view_as(pred)).sum().item()
            accuracy = correct / len(valid_loader.dataset)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.exceptions.TrialPruned()
        return accuracy

    torch.manual_seed(0)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner())
    began = time.perf_counter() - STARTED
    study.optimize(objective, n_trials=n_trials)
    ended = time.perf_counter() - STARTED
    if os.environ.get("TRICKOPT_PHASES"):  # seconds since this script started
        with open(os.environ["TRICKOPT_PHASES"], "w") as handle:
            json.dump({"optimize": [[began, ended]], "main_end": [[ended, ended]]}, handle)
    states = [t.state.name.lower() for t in study.trials]
    print(f"trials: {', '.join(f'{states.count(s)} {s}' for s in sorted(set(states)))}")
    print(f"best val_accuracy: {study.best_value} (trial {study.best_trial.number})")
    print(f"epochs trained: {sum(len(t.intermediate_values) for t in study.trials)}")


def main() -> None:
    args = parse_args()
    if args.objective:
        idiomatic_objective(args.n_trials, args.epochs)
        return
    trickopt = [str(BUDGET), "--n-trials", str(args.n_trials)]
    trickopt += ["--set", f"train.max_epochs={args.epochs}"] if args.epochs != 10 else []
    sides = {
        "(a) idiomatic": [sys.executable, str(HERE / "idiomatic.py"), "--objective", "--n-trials",
                          str(args.n_trials), "--epochs", str(args.epochs)],
        "(b) trickopt": study_command(*trickopt)}
    if args.also:
        sides["(b') trickopt " + " ".join(args.also)] = study_command(
            *trickopt, *[x for kv in args.also for x in ("--set", kv)])
    if args.before:  # its trickopt first on sys.path: spawned processes inherit sys.path
        run = (f"import runpy, sys; sys.path.insert(0, {str(Path(args.before).resolve())!r}); "
               "runpy.run_module('trickopt.study', run_name='__main__', alter_sys=True)")
        sides[f"(b'') trickopt of {args.before}"] = [sys.executable, "-c", run, *trickopt]
    machine_facts("trickopt against the idiomatic Optuna objective, same budget", [
        f"{args.n_trials} trials x <= {args.epochs} epochs; repetitions: {args.repeats}, "
        "interleaved, each run in a fresh temporary folder",
        *[f"{name}: `{' '.join(argv[1:])}`" for name, argv in sides.items()]])
    compare_commands(sides, args.repeats)


if __name__ == "__main__":
    main()
