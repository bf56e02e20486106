"""Hydra's instantiate, with segexp's own errors surfacing as themselves."""

from __future__ import annotations

from segexp.errors import SegexpError


def instantiate(config, **kwargs):
    """hydra.utils.instantiate, but a SegexpError raised by the target surfaces as itself, not wrapped."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, SegexpError):
            raise err.__cause__ from None
        raise
