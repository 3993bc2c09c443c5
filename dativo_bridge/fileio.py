"""The file-object protocol of Dativo's write-only streams (sinks that hash, encrypt or
upload what passes through them): what pyarrow and the io module ask of such an object."""

from __future__ import annotations


class WriteOnlyStream:
    """Mixin: a stream that can only be written, forward, once."""

    def writable(self) -> bool:
        """Always true."""
        return True

    def readable(self) -> bool:
        """Always false."""
        return False

    def seekable(self) -> bool:
        """Always false."""
        return False
