from .parser import FieldError, ManifestInvalid, manifest_from_bytes, manifest_from_data, manifest_from_dir
from .schema import Kind, Manifest, Tier

__all__ = [
    "FieldError",
    "Kind",
    "Manifest",
    "ManifestInvalid",
    "Tier",
    "manifest_from_bytes",
    "manifest_from_data",
    "manifest_from_dir",
]
