#!/usr/bin/env python3
"""A small program that saves its state the way many real ones do, and gets
durability wrong in the classic ways (plus one save done right, for contrast).

Run it under the auditor:  auditor run -- python3 demo/careless_saver.py
"""
import json
import os

state = {"version": 3, "users": ["ada", "grace", "linus"]}
blob = json.dumps(state).encode()

# 1. Temp file + rename, no fsync: after a power cut "state.json" can be empty.
with open("state.json.tmp", "wb") as f:
    f.write(blob)
os.rename("state.json.tmp", "state.json")

# 2. Config rewritten in place: O_TRUNC first, data later. A crash in between
#    leaves an empty config.
with open("settings.ini", "w") as f:
    f.write("[core]\nmode = fast\n")
with open("settings.ini", "w") as f:
    f.write("[core]\nmode = safe\n")

# 3. An append-only journal that is never fsynced before the program exits.
with open("journal.log", "ab") as f:
    for i in range(100):
        f.write(b"entry %d\n" % i)

# 4. Done right: write aside, fsync the file, rename, fsync the directory.
with open("safe.json.tmp", "wb") as f:
    f.write(blob)
    f.flush()
    os.fsync(f.fileno())
os.rename("safe.json.tmp", "safe.json")
dirfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dirfd)
os.close(dirfd)
