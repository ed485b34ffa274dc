"""The encrypted, signed hot list: CSV (`csv`) -> signed bundle (`bundle`) -> in-RAM index and
matching (`index`) -> rollback-safe install on the device (`install`).

The public names of all four are importable from `alprd.privacy.hotlist`.
"""

from .bundle import (
    FORMAT,
    MAGIC,
    Manifest,
    encode_entries,
    encrypt_payload,
    new_nonce_material,
    pack_bundle,
    read_manifest_unverified,
    verify_bundle,
)
from .csv import (
    NCIC_COLUMNS,
    CsvError,
    Entry,
    entries_from_rows,
    normalize_plate,
    parse_csv,
    parse_ncic_csv,
    split_expired,
    wildcard_kind,
)
from .delta import DELTA_FORMAT, DELTA_MAGIC, is_delta, pack_delta, verify_delta
from .index import DEFAULT_LOOKALIKE_CLASSES, HotList, Lookalike, load_bundle, release_memory
from .install import DEFAULT_LIST_ID, HotListInstaller, StateStore, load_keys

__all__ = [
    "DEFAULT_LIST_ID",
    "DEFAULT_LOOKALIKE_CLASSES",
    "DELTA_FORMAT",
    "DELTA_MAGIC",
    "FORMAT",
    "MAGIC",
    "NCIC_COLUMNS",
    "CsvError",
    "Entry",
    "HotList",
    "HotListInstaller",
    "Lookalike",
    "Manifest",
    "StateStore",
    "encode_entries",
    "encrypt_payload",
    "entries_from_rows",
    "is_delta",
    "load_bundle",
    "load_keys",
    "new_nonce_material",
    "normalize_plate",
    "pack_bundle",
    "pack_delta",
    "parse_csv",
    "parse_ncic_csv",
    "read_manifest_unverified",
    "release_memory",
    "split_expired",
    "verify_bundle",
    "verify_delta",
    "wildcard_kind",
]
