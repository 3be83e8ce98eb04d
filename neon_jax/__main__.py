"""``python -m neon_jax ...`` is the ``neon-jax`` command."""

from neon_jax.cli import main

raise SystemExit(main())
