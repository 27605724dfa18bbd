"""The store's Lua scripts run once each and only on a primary: a guard on how the adapters call them."""

from __future__ import annotations

import inspect
import re

from otp_step_service.adapters import redis_rate, redis_store


def test_every_store_script_is_registered_primary_only_and_run_through_run_script() -> None:
    # redis-py sends a command again when its connection drops, and a counter script run twice counts (or gives
    # back) twice; a script without the primary-only header would run on a demoted primary's data.
    for module in (redis_store, redis_rate):
        source = inspect.getsource(module)
        assert "register_script(" not in source, f"{module.__name__}: register with primary_script"
        called_directly = re.findall(r"await self\._[a-z_]+\(\s*keys=", source)
        assert not called_directly, f"{module.__name__}: run scripts with run_script: {called_directly}"
