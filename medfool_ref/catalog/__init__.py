"""The catalog: models, loader, derived fields, exports and citations."""

from .diagnostics import CatalogError, Diagnostic, Severity
from .loader import Catalog, check_catalog, default_root, load_catalog

__all__ = ["Catalog", "CatalogError", "Diagnostic", "Severity", "check_catalog", "default_root", "load_catalog"]
