"""Fills an encfs read-only mount's segment cache with every segment of one file.

A sequential stream would not do it: a read-only mount drops the segments a sequential reader
has passed (the kernel's page cache keeps them). So this reads one 64 KiB segment at a time, in
an order where no read lies within the mount's sequential slack (8 MiB) of the one before, with
the kernel's readahead off, so every read reaches the mount as a random read.

    python3 benches/fill_cache.py MOUNTED_FILE
"""
import os
import sys

SEGMENT = 64 << 10
STRIDE = 331  # segments between two reads: 20.7 MiB; a prime, so it visits every segment once


def main() -> None:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        count = -(-os.fstat(fd).st_size // SEGMENT)
        if count % STRIDE == 0:
            sys.exit(f"{sys.argv[1]}: {count} segments, a multiple of the stride")
        for k in range(1, count + 1):
            os.pread(fd, SEGMENT, (k * STRIDE) % count * SEGMENT)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
