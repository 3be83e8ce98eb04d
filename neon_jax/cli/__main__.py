"""python -m neon_jax.cli"""

import sys

from neon_jax.cli import main

sys.exit(main())
