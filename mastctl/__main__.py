from mastctl.cli import main

raise SystemExit(main())
