"""The embedded default delivery: each message written as an .eml file to a directory."""

from __future__ import annotations

import os
from pathlib import Path

from campaign_engine.private_files import make_private_dir, write_private


class FileOutbox:
    """A directory of `.eml` files, one per Message-ID, each written whole and once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, message_id: str) -> Path:
        """The file of a Message-ID: its left part (between `<` and `@`) plus `.eml`."""
        # Message ids are built from hex ids and step ids, which the API restricts to
        # [A-Za-z0-9_-]: safe as file names.
        return self.directory / f"{message_id.strip('<>').split('@', 1)[0]}.eml"

    def deliver(self, message_id: str, message: bytes) -> bool:
        """Writes the message (its bytes as sent, CRLF line ends) once; False when a file for
        this Message-ID already exists. A new directory is 0700 and every file 0600: the files
        hold addresses, content and unsubscribe tokens (`campaign_engine.private_files`)."""
        make_private_dir(self.directory)
        target = self.path_for(message_id)
        if target.exists():
            return False
        partial = target.with_suffix(f".{os.getpid()}.partial")
        write_private(partial, message)
        try:
            # link() fails if the target exists, so two racing attempts still deliver once;
            # the file appears whole or not at all.
            os.link(partial, target)
        except FileExistsError:
            return False
        finally:
            partial.unlink(missing_ok=True)
        return True
