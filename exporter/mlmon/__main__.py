from mlmon.cli import main

raise SystemExit(main())
