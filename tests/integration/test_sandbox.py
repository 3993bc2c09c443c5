"""`dativo sandbox` against a hostile plugin (tests/integration/sandbox_hostile.py): every
escape it tries is denied or stopped with the right message, as root and as an unprivileged
user, and benign plugins (tap-dativo-csv into target-jsonl from PyPI) run normally under
the same policy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dativo_bridge.sandbox import landlock
from tests.e2e.helpers import REPO, peer_venv

pytestmark = pytest.mark.skipif(
    landlock.abi() < 1, reason="Landlock is not available on this kernel (needs Linux 5.13+)"
)

HOSTILE = str(Path(__file__).with_name("sandbox_hostile.py"))
SANDBOX = [sys.executable, "-m", "dativo_bridge.sandbox_cli"]
SECRET_KEY = "wJalrXUtnFEMI-parent-secret"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _users() -> list[object]:
    users: list[object] = [pytest.param([], id="root" if os.getuid() == 0 else "user")]
    reason = None
    if os.getuid() != 0:
        reason = "switching to nobody needs root"
    elif shutil.which("setpriv") is None:
        reason = "setpriv (util-linux) is not installed"
    elif (
        subprocess.run([*NOBODY, "test", "-x", sys.executable], check=False).returncode != 0
        or subprocess.run([*NOBODY, "test", "-r", __file__], check=False).returncode != 0
    ):
        reason = f"nobody cannot run {sys.executable} or read the tests (a 0700 directory)"
    users.append(
        pytest.param(
            NOBODY, id="nobody", marks=pytest.mark.skipif(bool(reason), reason=reason or "")
        )
    )
    return users


@pytest.fixture(params=_users())
def user(request: pytest.FixtureRequest) -> list[str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def arena() -> Iterator[Path]:
    """A directory every user can read, with a secret file, a fake home with AWS
    credentials and a world-writable folder: outside the sandbox, anyone could read and
    write them, so a denial below is the sandbox's doing."""
    root = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    root.chmod(0o755)
    (root / "secret.txt").write_text("top-secret-file\n")
    aws = root / "home" / ".aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text("[default]\naws_secret_access_key = from-home\n")
    (root / "out").mkdir()
    for path in (root / "home", aws, root / "out"):
        path.chmod(0o777)
    for path in (root / "secret.txt", aws / "credentials"):
        path.chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def hexpath(path: Path) -> str:
    return str(path).encode().hex()


def sandboxed(
    user: list[str], arena: Path, options: list[str], command: list[str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(arena / "home"),
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [*user, *SANDBOX, *options, "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=arena,
        check=False,
    )


def hostile(
    user: list[str], arena: Path, options: list[str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return sandboxed(user, arena, options, [sys.executable, HOSTILE, *args], timeout)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("sandbox:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_check_lists_the_active_layers(user: list[str], arena: Path) -> None:
    done = subprocess.run(
        [*user, *SANDBOX, "--check"], capture_output=True, text=True, cwd=arena, check=True
    )
    layers = ("network namespace", "private /dev/shm", "landlock filesystem", "no_new_privs")
    for layer in (*layers, "process limit"):
        assert f"active       {layer}" in done.stdout, done.stdout


def test_files_outside_the_policy_are_unreadable(user: list[str], arena: Path) -> None:
    secret = arena / "secret.txt"
    credentials = arena / "home" / ".aws" / "credentials"
    for path in (secret, credentials):
        done = hostile(user, arena, [], "read", hexpath(path))
        assert done.stdout.startswith("DENIED 13"), (done.stdout, done.stderr)
    # The same plugin reads them once the policy names them, and without the sandbox.
    done = hostile(user, arena, ["--readable", str(secret)], "read", hexpath(secret))
    assert done.stdout.strip() == "OK top-secret-file", done.stderr
    plain = subprocess.run(
        [*user, sys.executable, HOSTILE, "read", hexpath(credentials)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.startswith("OK [default]")


def test_the_environment_is_scrubbed(user: list[str], arena: Path) -> None:
    done = hostile(user, arena, [], "env", "AWS_SECRET_ACCESS_KEY")
    assert done.stdout.splitlines() == ["DENIED absent", "KEYS HOME,LANG,PATH,TMPDIR"] or (
        done.stdout.splitlines() == ["DENIED absent", "KEYS HOME,PATH,TMPDIR"]
    ), done.stdout
    # Nor through the supervisor's /proc/<pid>/environ.
    done = hostile(user, arena, [], "parent-environ")
    assert done.stdout.startswith("DENIED"), done.stdout
    assert SECRET_KEY not in done.stdout
    done = hostile(user, arena, ["--env", "AWS_SECRET_ACCESS_KEY"], "env", "AWS_SECRET_ACCESS_KEY")
    assert done.stdout.splitlines()[0] == f"OK {SECRET_KEY}"


class Listener:
    """A TCP server on the host's loopback that records what it receives."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(100))

    def close(self) -> None:
        self.sock.close()


def test_network_is_off_by_default_and_on_when_asked(user: list[str], arena: Path) -> None:
    listener = Listener()
    try:
        done = hostile(user, arena, [], "connect", str(listener.port))
        assert done.stdout.startswith("DENIED"), done.stdout
        assert listener.received == []
        done = hostile(user, arena, ["--network"], "connect", str(listener.port))
        assert done.stdout.strip() == "OK connected", done.stderr
        deadline = time.monotonic() + 5
        while not listener.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.received == [b"hello"]
    finally:
        listener.close()


def test_landlock_denies_tcp_where_no_network_namespace_can_be_made(arena: Path) -> None:
    """In a user namespace that may not nest another and holds no capability (so no
    network namespace either), --no-network falls back to Landlock's TCP rules."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("needs unshare and setpriv (util-linux)")
    listener = Listener()
    try:
        inner = " ".join([*SANDBOX, "--", sys.executable, HOSTILE, "connect", str(listener.port)])
        script = (
            "echo 0 > /proc/sys/user/max_user_namespaces && "
            f"exec setpriv --bounding-set=-all {inner}"
        )
        done = subprocess.run(
            ["unshare", "-Ur", "sh", "-c", script],
            capture_output=True,
            text=True,
            cwd=arena,
            timeout=60,
            check=False,
        )
        if "max_user_namespaces" in done.stderr:
            pytest.skip(f"cannot limit nested user namespaces here: {done.stderr}")
        assert done.stdout.strip() == "DENIED 13 Permission denied", (done.stdout, done.stderr)
        assert listener.received == []
        # best-effort warns once about what it could not use
        assert one_line(done).startswith("sandbox: warning: sandbox_hostile runs without")
        # Landlock's rules are TCP only: UDP is refused by the seccomp filter.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind(("127.0.0.1", 0))
            receiver.settimeout(1.0)
            port = receiver.getsockname()[1]
            udp = script.replace(f"{HOSTILE} connect {listener.port}", f"{HOSTILE} udp {port}")
            assert udp != script
            done = subprocess.run(
                ["unshare", "-Ur", "sh", "-c", udp],
                capture_output=True,
                text=True,
                cwd=arena,
                timeout=60,
                check=False,
            )
            assert done.stdout.splitlines() == ["DENIED 13 Permission denied", "OK socketpair"], (
                done.stdout,
                done.stderr,
            )
            with pytest.raises(TimeoutError):
                receiver.recvfrom(64)
    finally:
        listener.close()


def test_strict_refuses_when_a_layer_is_unavailable(arena: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    inner = " ".join([*SANDBOX, "--level", "strict", "--", sys.executable, HOSTILE, "sleep", "0"])
    done = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", f"echo 0 > /proc/sys/user/max_user_namespaces && {inner}"],
        capture_output=True,
        text=True,
        cwd=arena,
        timeout=60,
        check=False,
    )
    assert done.returncode == 125, done.stderr
    assert one_line(done).startswith(
        "sandbox: refusing to run sandbox_hostile at level strict: user namespace is unavailable"
    )
    assert "OK slept" not in done.stdout


def test_writes_land_only_in_the_scratch_directory(user: list[str], arena: Path) -> None:
    evil = arena / "out" / "evil.txt"
    done = hostile(user, arena, [], "write", hexpath(evil))
    assert done.stdout.startswith("DENIED 13"), done.stdout
    assert not evil.exists()
    done = hostile(user, arena, [], "scratch")
    assert done.stdout.startswith("OK"), done.stdout
    scratch = done.stdout.split()[1]
    assert not os.path.exists(scratch), "the run must leave no scratch behind"
    done = hostile(user, arena, ["--writable", str(arena / "out")], "write", hexpath(evil))
    assert done.stdout.strip() == "OK wrote"
    assert evil.read_text() == "pwned\n"


def test_dev_shm_is_private_writable_and_capped(user: list[str], arena: Path) -> None:
    """multiprocessing works (its semaphores live in /dev/shm), the host's /dev/shm is not
    seen, what the plugin puts there does not reach the host, and its size is a quarter of
    the memory limit."""
    marker = Path(f"/dev/shm/dativo-host-marker-{os.getpid()}")
    marker.write_text("host")
    written = Path("/dev/shm/dativo-sandbox-shm-test")
    written.unlink(missing_ok=True)
    try:
        done = hostile(user, arena, [], "shm", "1")
        lines = done.stdout.splitlines()
        assert lines[0] == "SEEN -", done.stdout + done.stderr
        assert lines[1:] == ["OK lock", "OK wrote"], done.stdout + done.stderr
        assert "joblib" not in done.stderr and "shm" not in done.stderr, done.stderr
        assert not written.exists(), "the plugin's /dev/shm must not be the host's"
        assert marker.read_text() == "host"
        done = hostile(user, arena, ["--memory-mb", "64"], "shm", "32")
        assert done.stdout.splitlines()[1:] == ["OK lock", "DENIED write 28"], done.stdout
        done = hostile(user, arena, ["--memory-mb", "64"], "shm", "15")
        assert done.stdout.splitlines()[1:] == ["OK lock", "OK wrote"], done.stdout
    finally:
        marker.unlink(missing_ok=True)
        written.unlink(missing_ok=True)


def test_signals_stay_inside(user: list[str], arena: Path) -> None:
    done = hostile(user, arena, [], "kill-parent")
    assert done.stdout.startswith("DENIED 1"), done.stdout


def test_memory_limit_stops_the_plugin(user: list[str], arena: Path) -> None:
    done = hostile(user, arena, ["--memory-mb", "100", "--name", "tap-foo"], "alloc", "3000")
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: tap-foo exceeded its memory limit of 100 MB"
    assert "OK" not in done.stdout


def test_cpu_limit_stops_the_plugin(user: list[str], arena: Path) -> None:
    started = time.monotonic()
    done = hostile(user, arena, ["--cpu-seconds", "1"], "spin", "30")
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: sandbox_hostile exceeded its CPU limit of 1 second"
    assert time.monotonic() - started < 15


def test_wall_limit_stops_the_plugin(user: list[str], arena: Path) -> None:
    started = time.monotonic()
    done = hostile(user, arena, ["--wall-seconds", "1.5"], "sleep", "30")
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: sandbox_hostile exceeded its wall-clock limit of 1.5 seconds"
    assert time.monotonic() - started < 10


def _alive_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if token.encode() in cmdline and state != "Z":
                found.append(int(entry))
    return found


def test_process_limit_stops_a_fork_bomb_and_all_its_children(user: list[str], arena: Path) -> None:
    token = f"token-{uuid.uuid4().hex}"
    started = time.monotonic()
    done = hostile(user, arena, ["--max-processes", "5"], "fork", "40", token)
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: sandbox_hostile exceeded its process limit of 5"
    assert time.monotonic() - started < 15
    assert _alive_with(token) == []


def test_file_size_limit_stops_the_plugin(user: list[str], arena: Path) -> None:
    done = hostile(user, arena, ["--max-file-mb", "2"], "big-file", "10")
    assert done.returncode == 124, done.stderr
    assert one_line(done) == "sandbox: sandbox_hostile exceeded its file size limit of 2 MB"


POLICY = [
    "--memory-mb",
    "512",
    "--cpu-seconds",
    "60",
    "--wall-seconds",
    "120",
    "--max-processes",
    "64",
    "--max-file-mb",
    "100",
]


@pytest.fixture(scope="module")
def target_jsonl() -> Path:
    return peer_venv("target-jsonl==0.1.4", "target-jsonl")


def test_benign_plugins_run_normally_under_the_same_policy(
    user: list[str], arena: Path, target_jsonl: Path
) -> None:
    csv = arena / "orders.csv"
    shutil.copy(REPO / "demo" / "orders.csv", csv)
    csv.chmod(0o644)
    (arena / "tap.json").write_text(json.dumps({"files": [{"stream": "orders", "path": str(csv)}]}))
    out = arena / "out"
    (arena / "target.json").write_text(
        json.dumps({"destination_path": str(out), "do_timestamp_file": False})
    )
    for name in ("tap.json", "target.json"):
        (arena / name).chmod(0o644)
    sandbox = " ".join([*user, *SANDBOX, *POLICY])
    command = (
        f"{sandbox} --readable {csv} -- tap-dativo-csv --config {arena / 'tap.json'} | "
        f"{sandbox} --writable {out} -- {target_jsonl} --config {arena / 'target.json'}"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=arena,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sandbox: warning" not in done.stderr
    records = [json.loads(line) for line in (out / "orders.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5]
    assert json.loads(done.stdout.splitlines()[-1])["bookmarks"]["orders"]


def test_descriptors_named_on_the_command_line_stay_open_and_no_other(
    user: list[str], arena: Path
) -> None:
    """``dativo run`` passes a config as ``/dev/fd/N`` of an in-memory file: that
    descriptor reaches the plugin; any other inherited one (here: the secret, opened by
    the caller) is closed before the command starts, so it cannot bypass Landlock."""
    config = os.memfd_create("config")
    os.write(config, b"in-memory-config")
    secret = os.open(arena / "secret.txt", os.O_RDONLY)
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for fd, expected in ((config, "OK in-memory-config"), (secret, "DENIED")):
            command = [sys.executable, HOSTILE, "read", f"/dev/fd/{fd}".encode().hex()]
            done = subprocess.run(
                [*user, *SANDBOX, "--", *command, f"--config=/dev/fd/{config}"],
                capture_output=True,
                text=True,
                env=env,
                cwd=arena,
                pass_fds=(config, secret),
                timeout=60,
                check=False,
            )
            assert done.stdout.startswith(expected), (done.stdout, done.stderr)
            assert "sandbox: warning" not in done.stderr
    finally:
        os.close(config)
        os.close(secret)


def test_a_terminated_sandbox_stops_its_command(arena: Path) -> None:
    """SIGTERM to the supervisor (Ctrl-C, or dativo run stopping a plugin) reaches the
    command's process group; nothing is left running."""
    token = f"token-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [*SANDBOX, "--", sys.executable, HOSTILE, "fork", "3", token],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=arena,
    )
    deadline = time.monotonic() + 20
    while len(_alive_with(token)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    # the supervisor, the plugin and its 3 children
    assert len(_alive_with(token)) == 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert _alive_with(token) == []


def test_an_executable_outside_a_bin_directory_does_not_expose_its_folder(
    user: list[str], arena: Path
) -> None:
    """A plugin script in a project folder (``executable: ./tap-x``) is readable itself,
    and the interpreter its shebang names, but not its neighbours (a .env, the config)."""
    tool = arena / "project"
    tool.mkdir()
    script = tool / "tap-x"
    script.write_text(f"#!{sys.executable}\n" + Path(HOSTILE).read_text())
    script.chmod(0o755)
    neighbour = tool / ".env"
    neighbour.write_text("DB_PASSWORD=hunter2\n")
    neighbour.chmod(0o644)
    done = sandboxed(user, arena, [], [str(script), "read", hexpath(neighbour)])
    assert done.stdout.startswith("DENIED 13"), (done.stdout, done.stderr)


def test_etc_is_readable_but_not_its_secrets(user: list[str], arena: Path) -> None:
    done = hostile(user, arena, [], "read", hexpath(Path("/etc/passwd")))
    assert done.stdout.startswith("OK root:"), done.stdout
    # Root could read /etc/shadow outside the sandbox (nobody never can).
    done = hostile(user, arena, [], "read", hexpath(Path("/etc/shadow")))
    assert done.stdout.startswith("DENIED 13"), done.stdout
    for key in sorted(Path("/etc/ssh").glob("ssh_host_*_key"))[:1]:
        done = hostile(user, arena, [], "read", hexpath(key))
        assert done.stdout.startswith("DENIED 13"), done.stdout


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_what_a_killed_supervisor_left_is_cleaned_up_by_the_next_run(arena: Path) -> None:
    """SIGKILL leaves the supervisor no chance to clean up: the next run removes the dead
    supervisor's scratch directory and, where it made one, stops what is still running in
    its cgroup and removes the cgroup."""
    dead = _dead_pid()
    scratch = Path(tempfile.gettempdir()) / f"dativo-sandbox-{dead}-leftover"
    scratch.mkdir()
    (scratch / "file").write_text("left behind")
    pids = Path("/sys/fs/cgroup/pids")
    stale = pids / f"dativo-sandbox-{dead}-1"
    orphan = None
    try:
        stale.mkdir()
        orphan = subprocess.Popen(["sleep", "30"])
        (stale / "cgroup.procs").write_text(str(orphan.pid))
    except OSError:
        stale = None  # no writable cgroup here (not root, or cgroup v2): scratch only
    done = hostile([], arena, ["--max-processes", "8"], "sleep", "0")
    assert done.stdout.strip() == "OK slept", done.stderr
    assert not scratch.exists()
    if stale is not None and orphan is not None:
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()


def test_a_pipe_sees_eof_when_the_command_closes_its_output(arena: Path) -> None:
    """The supervisor does not hold the command's stdout: a reader downstream sees EOF
    when the command closes it, not when the sandbox exits."""
    proc = subprocess.Popen(
        [*SANDBOX, "--", "/bin/sh", "-c", "echo hi; exec >&-; sleep 5"],
        stdout=subprocess.PIPE,
        cwd=arena,
    )
    started = time.monotonic()
    assert proc.stdout is not None
    assert proc.stdout.read() == b"hi\n"
    assert time.monotonic() - started < 3
    assert proc.wait(timeout=10) == 0


def test_level_off_runs_the_command_as_is(arena: Path) -> None:
    done = hostile([], arena, ["--level", "off"], "env", "AWS_SECRET_ACCESS_KEY")
    assert done.stdout.splitlines()[0] == f"OK {SECRET_KEY}"
    assert done.stderr == ""


def test_a_missing_command_is_exit_127_naming_it(arena: Path) -> None:
    done = sandboxed([], arena, ["--name", "tap-gone"], ["no-such-tap-anywhere", "--about"])
    assert done.returncode == 127
    assert one_line(done) == "sandbox: tap-gone: command not found: no-such-tap-anywhere"
