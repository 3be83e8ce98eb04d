"""The repository's root, imported as ``neon_jax`` only from the folder above a clone named ``neon_jax``.

Python would otherwise import this folder as an empty namespace package (``module 'neon_jax' has no attribute
'prune'``). Here the package's modules are looked up in ``./neon_jax/`` and its ``__init__`` is run, so
``import neon_jax`` means the same package from either folder. The package itself is ``neon_jax/``; this file is
not installed.
"""

import os as _os

__path__ = [_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "neon_jax")]
_init = _os.path.join(__path__[0], "__init__.py")
if not _os.path.isfile(_init):
    raise ImportError(f"{_os.path.dirname(_init)} is not the neon_jax package: run Python from the repository's "
                      f"folder or install it (pip install -e <the clone>)")
with open(_init) as _fh:
    exec(compile(_fh.read(), _init, "exec"))  # noqa: S102 - the package's own __init__, under this module's name
del _fh, _init, _os
