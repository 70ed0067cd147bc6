"""trainWeakly's checkpoint0 lock: :mod:`converters.file_lock` (one lock for every output)."""
from converters.file_lock import file_lock, lock_holder

__all__ = ["file_lock", "lock_holder"]
