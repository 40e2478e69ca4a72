from trickopt.study.cli import main

raise SystemExit(main())
