"""Lightning's checkpoint writer, replaced: every checkpoint whole or not at all."""

import contextlib
import io
import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes (last.ckpt, best-*.ckpt, the SIGTERM one). Lightning's own save goes through
    a file in the system temp folder and moves it: across file systems that move is a copy into the target, which a
    kill or a full disk leaves half-written over the previous checkpoint, and the temp file stays. Here the bytes
    go to a hidden file beside the target, then os.replace (atomic within a file system): a reader sees the old file
    or the new one. On an error the temporary file is removed and the OSError says how many bytes were needed."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(exist_ok=True)  # not parents=True: a run folder removed while it runs is an error
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                e.needed_bytes = len(data)
                if e.filename is None or str(e.filename) == str(tmp):
                    e.filename = str(path)  # the user's file, not our temporary name (a failed write names none)
            raise
