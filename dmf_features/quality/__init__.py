"""Data-quality gates: Great Expectations suites run on the lake's tables, results kept in the lake."""

import logging

# GX logs dozens of INFO lines while it is imported (and more per run); quiet it before the import
# below loads it, so an application logging at INFO still reads well. Lower it again to debug GX.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

from dmf_features.quality.runner import ExpectationResult, ValidationReport, validate_tables  # noqa: E402

# One GX module pins its own logger to INFO when imported (it announces a temporary folder on every
# ephemeral context); let it follow the package level set above.
logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)

__all__ = ["ExpectationResult", "ValidationReport", "validate_tables"]
