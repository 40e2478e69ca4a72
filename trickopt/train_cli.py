"""`python -m trickopt.train_cli [CONFIG.yaml] [--set key=value ...] [--sanity]`."""

from __future__ import annotations

import argparse
import sys

from trickopt.config import ConfigError, load_run_config
from trickopt.data import DataError, load_data
from trickopt.models import seeded_model
from trickopt.sanity import run_sanity_checks
from trickopt.train import epoch_metrics, evaluate, fit, score_name

EXAMPLES = """examples:
  python -m trickopt.train_cli                              # digits MLP, defaults
  python -m trickopt.train_cli --set model.arch=cnn --set model.norm=batch
  python -m trickopt.train_cli --set train.stopper=gl --set train.stopper_params='{alpha: 5}'
  python -m trickopt.train_cli configs/run.yaml --sanity    # check before a long study
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trickopt.train_cli",
        description="Train one configuration with the tricks.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML file with data/model/train sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one setting, e.g. train.lr=0.01")
    parser.add_argument("--sanity", action="store_true",
                        help="with dropout and other noise off, check that the training loss "
                             "falls and a small batch can be overfit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_run_config(args.config, args.overrides)
        data = load_data(config.data)
        model = seeded_model(config.model, data.input_shape, data.n_classes,
                             seed=config.train.seed)
    except (ConfigError, DataError, ValueError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    if args.sanity:
        return _sanity(config, data)
    columns, score = epoch_metrics(data.task), score_name(data.task)
    print(f"{'epoch':>5} " + " ".join(f"{name:>15}" for name in columns), flush=True)

    def show(epoch: int, metrics: dict) -> bool:
        print(f"{epoch:>5} " + " ".join(f"{metrics[k]:>15.5g}" for k in columns), flush=True)
        return False

    history = fit(model, data, config.train, on_epoch_end=show)
    best = history.best
    print(f"stopped: {history.stop_reason} after {history.epochs_trained} epochs; "
          f"best epoch {history.best_epoch} (val_loss {best.get('val_loss', float('nan')):.4f}, "
          f"val_{score} {best.get(f'val_{score}', float('nan')):.4f})")
    test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
    print(f"test: loss {test_loss:.4f}, {score} {test_score:.4f} (best epoch's weights)")
    return 0


def _sanity(config, data) -> int:
    checks = run_sanity_checks(config, data)
    for check in checks:
        print(f"[{'ok' if check.passed else 'FAILED'}] {check.name}: {check.detail}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
