import gc

# Importing torch, optuna and the rest makes some 400,000 objects that live as long as the
# process, and the cyclic garbage collector walks them again and again while they are made
# (full collections of 0.1 s each). Off while importing, then set aside for good: 0.3 s less
# per command here (BENCHMARKS.md, section 2). The little garbage the imports leave (under
# 1 MB) is set aside with them, once.
gc.disable()
from trickopt.study.cli import exit_now, main  # noqa: E402

gc.freeze()
gc.enable()
exit_now(main())
