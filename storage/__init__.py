"""filmless storage: the only package that talks to Orthanc.

Public API: :class:`OrthancStore` (the facade), :class:`OrthancProcess`
(the managed Orthanc), :func:`open_store`, the settings dataclass and the
exception tree.
"""

from .client import METADATA_KEYS, OrthancStore
from .exceptions import LauncherError, NotFound, StorageError, StorageRejected, StorageTimeout, StorageUnavailable
from .failover import FailoverStore
from .index import INDEXED_TAGS, Level
from .launcher import Credentials, OrthancProcess, build_config, load_or_create_credentials, open_store
from .models import (
    Change,
    ChangesPage,
    IndexEntry,
    StorageStatistics,
    StoredInstance,
    StudySummary,
    SystemInfo,
    UploadResult,
)
from .push import PushJob, PushProgress
from .settings import StorageSettings

__all__ = [
    "INDEXED_TAGS",
    "IndexEntry",
    "Level",
    "StoredInstance",
    "METADATA_KEYS",
    "Change",
    "ChangesPage",
    "Credentials",
    "FailoverStore",
    "LauncherError",
    "NotFound",
    "OrthancProcess",
    "OrthancStore",
    "PushJob",
    "PushProgress",
    "StorageError",
    "StorageRejected",
    "StorageSettings",
    "StorageStatistics",
    "StorageTimeout",
    "StorageUnavailable",
    "StudySummary",
    "SystemInfo",
    "UploadResult",
    "build_config",
    "load_or_create_credentials",
    "open_store",
]
