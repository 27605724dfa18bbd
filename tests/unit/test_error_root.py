"""Every error the service defines sits under its one root, OtpStepError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import otp_step_service
from otp_step_service.steps.errors import OtpStepError


def test_every_exception_the_service_defines_is_an_otp_step_error() -> None:
    outside = []
    for module_info in pkgutil.walk_packages(otp_step_service.__path__, "otp_step_service."):
        if ".generated" in module_info.name or module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ == module.__name__
                and issubclass(value, BaseException)
                and not issubclass(value, OtpStepError)
            ):
                outside.append(f"{module.__name__}.{name}")
    assert not outside, outside
