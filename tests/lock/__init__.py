"""The lease lock (MkdirLock and the protocol under it), alone and across processes and mounts."""
