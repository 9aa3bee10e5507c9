"""A run folder (``checkpoint.save_dir``) belongs to one live training process.

``hold_run_folder`` takes the folder's lock (``toolkit.locks``: a second run on it fails at once,
naming the process that holds it; a killed owner's lock is taken over, with a message) and
removes the temporary files that killed or failed saves left behind. Under torchrun only rank 0
writes to the folder, so only rank 0 takes the lock.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from toolkit.files import remove_stale_temporaries
from toolkit.locks import RUN_LOCK, folder_lock


@contextmanager
def hold_run_folder(save_dir: str | os.PathLike, master: bool = True) -> Iterator[Path]:
    """Own ``save_dir`` for the ``with`` block (rank 0 only), after removing stale temporary files.

    :raises toolkit.locks.FolderLockedError: another live process holds the folder.
    """
    save_dir = Path(save_dir)
    with folder_lock(save_dir, RUN_LOCK, "training") if master else nullcontext():
        if master:
            remove_stale_temporaries(save_dir)
        yield save_dir
