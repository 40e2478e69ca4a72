"""The idiomatic objective: Optuna's official `pytorch_simple.py` example, ported to digits.

This is the baseline that `benchmarks/idiomatic.py` runs as a subprocess against
`python -m trickopt.study benchmarks/idiomatic_budget.yaml`. It is written the way users write
an Optuna objective today, following optuna-examples' pytorch/pytorch_simple.py line by line:

* the model is built by hand from the trial: 1-3 hidden layers, each with its own width
  (4-128) and dropout (0.2-0.5), ReLU, LogSoftmax + nll_loss;
* optimizer among Adam / RMSprop / SGD (torch defaults, so SGD has no momentum), lr 1e-5-1e-1
  log-uniform;
* a `DataLoader` over a `TensorDataset` (shuffle=True, batch 128) for training and validation,
  built inside the objective as the example's `get_mnist()` is;
* one host sync per validation batch (`pred.eq(...).sum().item()`), as in the example;
* `trial.report(accuracy, epoch)` + `trial.should_prune()` after every one of 10 epochs;
* an in-memory study, TPESampler(seed=0), MedianPruner() with Optuna's defaults, no tracking.

Departures from the example, all to share the budget with trickopt: digits (sklearn) instead of
a FashionMNIST subset, split 60/20/20 stratified with seed 0 and z-scored on the training split
(the split trickopt uses), the whole training and validation splits every epoch, a seeded TPE
and `torch.manual_seed(0)` once at the start (so that repeated runs train the same trials), and
the example's `timeout=600` dropped so that all 100 trials run.

Run:
    python benchmarks/idiomatic_objective.py              # 100 trials, prints a JSON line last
    python benchmarks/idiomatic_objective.py --n-trials 5
"""

import argparse
import json
import time

import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torch.utils.data
from optuna.trial import TrialState
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

DEVICE = torch.device("cpu")
BATCHSIZE = 128
CLASSES = 10
EPOCHS = 10


def load_splits():
    digits = load_digits()
    x, y = digits.data.astype("float32"), digits.target
    x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=0)
    scaler = StandardScaler().fit(x_train)
    train = torch.utils.data.TensorDataset(torch.tensor(scaler.transform(x_train),
                                                        dtype=torch.float32),
                                           torch.tensor(y_train))
    valid = torch.utils.data.TensorDataset(torch.tensor(scaler.transform(x_valid),
                                                        dtype=torch.float32),
                                           torch.tensor(y_valid))
    return train, valid


TRAIN, VALID = load_splits()


def define_model(trial):
    # We optimize the number of layers, hidden units and dropout ratio in each layer.
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers = []

    in_features = 8 * 8
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        p = trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)
        layers.append(nn.Dropout(p))

        in_features = out_features
    layers.append(nn.Linear(in_features, CLASSES))
    layers.append(nn.LogSoftmax(dim=1))

    return nn.Sequential(*layers)


def get_digits():
    train_loader = torch.utils.data.DataLoader(TRAIN, batch_size=BATCHSIZE, shuffle=True)
    valid_loader = torch.utils.data.DataLoader(VALID, batch_size=BATCHSIZE, shuffle=True)
    return train_loader, valid_loader


def objective(trial):

    # Generate the model.
    model = define_model(trial).to(DEVICE)

    # Generate the optimizers.
    optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    optimizer = getattr(optim, optimizer_name)(model.parameters(), lr=lr)

    train_loader, valid_loader = get_digits()

    # Training of the model.
    for epoch in range(EPOCHS):
        model.train()
        for data, target in train_loader:
            data, target = data.view(data.size(0), -1).to(DEVICE), target.to(DEVICE)

            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()

        # Validation of the model.
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in valid_loader:
                data, target = data.view(data.size(0), -1).to(DEVICE), target.to(DEVICE)
                output = model(data)
                # Get the index of the max log-probability.
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()

        accuracy = correct / len(valid_loader.dataset)

        trial.report(accuracy, epoch)

        # Handle pruning based on the intermediate value.
        if trial.should_prune():
            raise optuna.exceptions.TrialPruned()

    return accuracy


def main():
    global EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per trial (10)")
    args = parser.parse_args()
    EPOCHS = args.epochs

    torch.manual_seed(args.seed)  # not in the example: repeated runs train the same trials
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner())
    started = time.perf_counter()
    study.optimize(objective, n_trials=args.n_trials)
    optimize_seconds = time.perf_counter() - started

    pruned_trials = study.get_trials(deepcopy=False, states=[TrialState.PRUNED])
    complete_trials = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    epochs = sum(len(t.intermediate_values) for t in study.trials)

    print("Study statistics: ")
    print("  Number of finished trials: ", len(study.trials))
    print("  Number of pruned trials: ", len(pruned_trials))
    print("  Number of complete trials: ", len(complete_trials))

    print("Best trial:")
    trial = study.best_trial

    print("  Value: ", trial.value)

    print("  Params: ")
    for key, value in trial.params.items():
        print(f"    {key}: {value}")
    # For benchmarks/idiomatic.py: one machine-readable line, last.
    print(json.dumps({"complete": len(complete_trials), "pruned": len(pruned_trials),
                      "best_value": trial.value, "best_trial": trial.number,
                      "epochs": epochs, "optimize_seconds": optimize_seconds,
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
