"""A hostile plugin for the sandbox tests: ``python sandbox_hostile.py ACTION [ARG] [TOKEN]``.

Each action tries one escape and prints what happened on one line (``OK ...`` when the
escape worked, ``DENIED ...`` when the kernel refused). Paths are passed hex-encoded so that
they are not files named on the command line (which the sandbox makes readable). Every
loop is bounded, so a broken sandbox cannot hang or exhaust the machine.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def _path(arg: str) -> str:
    return bytes.fromhex(arg).decode()


def read(arg: str) -> None:
    try:
        with open(_path(arg)) as fh:
            print("OK", fh.read().strip())
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)


def write(arg: str) -> None:
    try:
        with open(_path(arg), "w") as fh:
            fh.write("pwned\n")
        print("OK wrote")
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)


def scratch(_arg: str) -> None:
    """Writes in TMPDIR and HOME work, and they are the same fresh, empty directory."""
    tmp, home = os.environ["TMPDIR"], os.environ["HOME"]
    before = os.listdir(tmp)
    with open(os.path.join(tmp, "x"), "w") as fh:
        fh.write("fine")
    print("OK" if tmp == home and before == [] else "WRONG", tmp, home, before)


def env(name: str) -> None:
    value = os.environ.get(name)
    print("OK", value) if value is not None else print("DENIED absent")
    print("KEYS", ",".join(sorted(os.environ)))


def parent_environ(_arg: str) -> None:
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
            print("OK", fh.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)


def connect(port: str) -> None:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=3) as sock:
            sock.sendall(b"hello")
        print("OK connected")
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)


def udp(port: str) -> None:
    """Send a datagram to 127.0.0.1:port, then check a unix socketpair still works."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"hello-udp", ("127.0.0.1", int(port)))
        print("OK sent")
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)
    left, right = socket.socketpair()
    left.sendall(b"x")
    print("OK socketpair" if right.recv(1) == b"x" else "BROKEN socketpair")


def alloc(megabytes: str) -> None:
    chunks = []
    for _ in range(int(megabytes) // 10):
        chunks.append(b"x" * (10 << 20))  # touched, so resident
    print("OK allocated", len(chunks) * 10, "MB")


def spin(seconds: str) -> None:
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        pass
    print("OK spun")


def sleep(seconds: str) -> None:
    time.sleep(float(seconds))
    print("OK slept")


def fork(count: str) -> None:
    made = 0
    for _ in range(int(count)):
        try:
            if os.fork() == 0:
                time.sleep(20)
                os._exit(0)
            made += 1
        except OSError as exc:
            print("DENIED fork", made, exc.strerror, flush=True)
            break
    time.sleep(20)
    print("OK forked", made)


def big_file(megabytes: str) -> None:
    with open(os.path.join(os.environ["TMPDIR"], "big"), "wb") as fh:
        for _ in range(int(megabytes)):
            fh.write(b"x" * (1 << 20))
    print("OK wrote", megabytes, "MB")


def shm(megabytes: str) -> None:
    """List /dev/shm, take a multiprocessing lock (a POSIX semaphore there), then write
    ``megabytes`` MB to a file in it."""
    print("SEEN", ",".join(sorted(os.listdir("/dev/shm"))) or "-")
    import multiprocessing

    try:
        multiprocessing.Lock()
        print("OK lock")
    except OSError as exc:
        print("DENIED lock", exc.errno)
    try:
        with open("/dev/shm/dativo-sandbox-shm-test", "wb") as fh:
            for _ in range(int(megabytes or 1)):
                fh.write(b"x" * (1 << 20))
                fh.flush()
        print("OK wrote")
    except OSError as exc:
        print("DENIED write", exc.errno)


def kill_parent(_arg: str) -> None:
    try:
        os.kill(os.getppid(), 0)
        print("OK signalled")
    except OSError as exc:
        print("DENIED", exc.errno, exc.strerror)


if __name__ == "__main__":
    action, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
    globals()[action.replace("-", "_")](arg)
    sys.stdout.flush()
