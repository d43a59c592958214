from fer_jax.cli import main

raise SystemExit(main())
