"""Config composition and validation.

Importing this package stores the typed schema (:mod:`lepton_fed.config.schema`) in
Hydra's ConfigStore, where ``conf/config.yaml`` expects it (``base_config``).
"""

from lepton_fed.config.schema import register as _register_schema

_register_schema()

from lepton_fed.config.compose import compose, precheck  # noqa: E402
from lepton_fed.config.paths import conf_dir, group_options  # noqa: E402
from lepton_fed.config.validate import check_overrides, raise_if, validate  # noqa: E402

__all__ = ["check_overrides", "compose", "conf_dir", "group_options", "precheck", "raise_if", "validate"]
