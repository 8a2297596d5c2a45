"""Config composition and validation."""

from lepton_fed.config.compose import compose, precheck
from lepton_fed.config.paths import conf_dir, group_options
from lepton_fed.config.validate import check_overrides, raise_if, validate

__all__ = ["check_overrides", "compose", "conf_dir", "group_options", "precheck", "raise_if", "validate"]
