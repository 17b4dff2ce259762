"""Ministry catalogues (issue 15 §4): versioned lists the claim exports and data entry check codes against."""

from .kinds import KINDS
from .loader import CatalogueLoad, Line, load_catalogue, store_version
from .lookup import (
    CodeCheck,
    check_code,
    code_name,
    codes_on,
    entry_on,
    has_versions,
    list_versions,
    new_communes,
    search_entries,
    unknown_icd10,
    version_on,
)
from .packaged import admin_unit_map_from_package, admin_units_from_package, demographics_from_package

__all__ = [
    "KINDS",
    "admin_unit_map_from_package",
    "admin_units_from_package",
    "CatalogueLoad",
    "CodeCheck",
    "Line",
    "check_code",
    "code_name",
    "codes_on",
    "demographics_from_package",
    "entry_on",
    "has_versions",
    "list_versions",
    "load_catalogue",
    "new_communes",
    "search_entries",
    "store_version",
    "unknown_icd10",
    "version_on",
]
