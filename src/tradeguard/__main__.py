from tradeguard.cli.main import main

raise SystemExit(main())
