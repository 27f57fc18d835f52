"""The Docker lab image: built by docker/build, run by docker/run, in every mode.

Each test runs a real container with real loop devices (the host kernel's)
and checks, from the host, that the container left nothing behind: no loop
device backed by a container lab, no container, no volume. The image
``cowprobe:latest`` (and the debootstrapped base where no registry is
reachable) stays cached between runs on one machine -- docker/build reuses
them, which keeps a rebuild to seconds; nothing else the tests create stays.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.pytest_plugin import require

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
IMAGE = os.environ.get("COWPROBE_IMAGE", "cowprobe:latest")
# Every container a test starts carries this prefix, so the leak check can
# tell ours from anybody else's.
NAME_PREFIX = f"cowprobe-test-{uuid.uuid4().hex[:8]}"
# Inside a container the entrypoint is PID 1, so every lab it (or a step it
# runs) builds is /tmp/cowprobe-lab-1-*; a host process is never PID 1's lab.
# The host's sysfs shows a loop's backing file by its path inside the
# container, which is how the host recognises container labs.
CONTAINER_LAB = "/tmp/cowprobe-lab-1-"
RUN_TIMEOUT = 600  # a hung container must not hang CI; not a timing assertion


def _docker(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _container_loops() -> dict[str, str]:
    """/dev/loopN -> backing file, for loops backed by a container lab."""
    found = {}
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(CONTAINER_LAB):
            found[f"/dev/{entry.name}"] = backing
    return found


_LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")  # lo_device is the first field


def _backing_dev(device: str) -> str | None:
    """major:minor of the filesystem holding ``device``'s backing file."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(_LOOP_INFO64.size)
        fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
    except OSError:
        return None  # detached meanwhile
    finally:
        os.close(fd)
    dev = _LOOP_INFO64.unpack(buf)[0]
    return f"{os.major(dev)}:{os.minor(dev)}"


def _orphaned_loops() -> dict[str, str]:
    """Container-lab loops whose container is gone.

    A container's lab images live on its root overlay, which is mounted on
    the host while the container exists. A loop whose backing filesystem is
    mounted nowhere on the host belongs to a container that is gone: that is
    a leak. A loop of a container still running (another session's docker
    tests on this machine) is not counted against us.
    """
    mounted = {line.split()[2] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    return {d: b for d, b in _container_loops().items() if _backing_dev(d) not in mounted}


def _our_containers() -> list[str]:
    proc = _docker("ps", "-a", "--filter", f"name={NAME_PREFIX}", "--format", "{{.Names}}")
    return proc.stdout.split()


def _volumes() -> set[str]:
    return set(_docker("volume", "ls", "-q").stdout.split())


# ------------------------------------------------------------------ fixtures


BASE_IMAGE = os.environ.get("DEBIAN_BASE_IMAGE", "cowprobe-debian-base:bookworm")


def _image_exists(tag: str) -> bool:
    return _docker("image", "inspect", tag, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require(
        shutil.which("docker") is not None,
        "docker CLI not installed (scripts/bootstrap --docker installs it)",
    )
    require(os.geteuid() == 0, "not root: starting dockerd and loop devices need root")
    require(Path("/dev/loop-control").exists(), "no /dev/loop-control on the host (modprobe loop)")
    started = subprocess.run(
        [str(DOCKER_DIR / "ensure-dockerd"), "--print-started"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    require(
        started.returncode == 0,
        f"dockerd not running and could not be started: {started.stderr.strip()}",
    )
    # A daemon this run started is stopped again at the end (its mounts
    # with it); one that was already answering is left alone.
    daemon = started.stdout.strip()
    try:
        yield from _built_image()
    finally:
        if daemon:
            subprocess.run([str(DOCKER_DIR / "stop-dockerd"), daemon], timeout=180, check=False)
            left = _dockerd_mounts()
            assert not _is_live(int(daemon)) and not left, (daemon, left)


def _dockerd_mounts() -> list[str]:
    """The mounts dockerd makes for itself (see docker/stop-dockerd)."""
    left = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        root, target = line.split()[3:5]
        if target == "/run/docker/netns/default" or (target == root == "/var/lib/docker"):
            left.append(target)
    return left


def _is_live(pid: int) -> bool:
    """Running, not a zombie (where PID 1 does not reap, a daemon that
    exited stays one)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _built_image() -> Iterator[str]:
    # Images this run creates are removed again at the end; ones that were
    # already here (a developer's cache) are left alone.
    preexisting = {tag for tag in (IMAGE, BASE_IMAGE) if _image_exists(tag)}
    build = subprocess.run(
        [str(DOCKER_DIR / "build"), "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, f"docker/build failed:\n{build.stderr[-4000:]}"
    assert build.stdout.strip().splitlines()[-1] == IMAGE
    if "cannot pull" in build.stderr:
        # The fallback path: the image must sit on the debootstrapped base.
        labels = _docker("image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE).stdout
        assert "org.cowprobe.base" in labels and "debootstrap" in labels, labels
    try:
        yield IMAGE
    finally:
        if os.environ.get("COWPROBE_KEEP_IMAGES") != "1":
            for tag in (IMAGE, BASE_IMAGE):
                if tag not in preexisting and _image_exists(tag):
                    _docker("rmi", "--force", tag, timeout=120)


@pytest.fixture
def leak_guard() -> Iterator[None]:
    """Fail the test if it left a loop device, a container or a volume.

    Mounts need no host-side check: a container's mounts live in its own
    mount namespace and die with it; what can outlive it is the loop device
    (the host kernel's) and the container itself. `docker run --rm` returns
    only once the container is removed, so its lab files are deleted by then.
    """
    orphans_before = _orphaned_loops()
    volumes_before = _volumes()
    yield
    leaked = {d: b for d, b in _orphaned_loops().items() if orphans_before.get(d) != b}
    containers = _our_containers()
    new_volumes = _volumes() - volumes_before
    for name in containers:  # clean up before failing, never leave them
        _docker("rm", "-f", name)
    assert not leaked, f"loop devices left attached by removed containers: {leaked}"
    assert not containers, f"containers left: {containers}"
    assert not new_volumes, f"volumes left: {new_volumes}"


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


_counter = iter(range(1_000_000))


def _name() -> str:
    return f"{NAME_PREFIX}-{next(_counter)}"


def run(image: str, *args: str, cwd: Path | None = None) -> Ran:
    """docker/run, as a user types it; ``cwd`` is the project it mounts at /work."""
    full_env = {**os.environ, "COWPROBE_IMAGE": image}
    mount = [] if cwd is not None else ["--no-project"]
    proc = subprocess.run(
        [str(DOCKER_DIR / "run"), "--name", _name(), *mount, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def _junit_totals(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()  # noqa: S314 -- written by our own container
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    return totals


# ------------------------------------------------------------------ modes


def test_image_has_the_tools_and_cowprobe(image: str, leak_guard: None) -> None:
    proc = _docker(
        "run",
        "--rm",
        "--name",
        _name(),
        "--entrypoint",
        "sh",
        image,
        "-c",
        "command -v mkfs.btrfs mkfs.xfs mkfs.ext4 losetup fusermount3 cowprobe pytest >/dev/null"
        " && python -c 'import probe, fakefs, pyfuse3, trio, rich; print(probe.__version__)'",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "probe.__version__ is empty"


def test_default_mode_runs_conformance_and_writes_reports(
    image: str, leak_guard: None, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ran = run(image, "--out", str(out))
    assert ran.code == 0, f"exit {ran.code}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    # The Markdown matrix reaches the console and /out alike.
    assert "| scenario |" in ran.stdout
    md = (out / "conformance.md").read_text()
    assert "| clone on a CoW fs |" in md
    assert md.strip() in ran.stdout
    totals = _junit_totals(out / "conformance.xml")
    assert totals["tests"] > 0
    assert totals["failures"] == 0 and totals["errors"] == 0, totals
    # Every real-filesystem cell that proves a clone must have run, not been
    # skipped: the whole point of the image is that the filesystems exist.
    clone_row = next(line for line in md.splitlines() if line.startswith("| clone on a CoW fs"))
    assert "pass" in clone_row and "btrfs" in clone_row and "xfs" in clone_row, clone_row
    report = (out / "report.md").read_text()
    assert report.strip() in ran.stdout
    # Measured inside the image: btrfs and XFS clone, ext4 does not.
    row = next(line for line in report.splitlines() if line.startswith("| reflink (FICLONE)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in report.splitlines() if line.startswith("|  | btrfs"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    verdict = dict(zip(columns[1:], cells[1:], strict=True))
    assert "yes" in verdict["btrfs"] and "yes" in verdict["xfs"], verdict
    assert "EOPNOTSUPP" in verdict["ext4"], verdict


@pytest.mark.parametrize(("fs", "fstype"), [("btrfs", "btrfs"), ("xfs", "xfs"), ("ext4", "ext4")])
def test_command_mode_puts_tmpdir_on_the_chosen_fs(
    image: str, leak_guard: None, fs: str, fstype: str
) -> None:
    ran = run(
        image,
        "--fs",
        fs,
        "sh",
        "-c",
        'findmnt -n -o FSTYPE -T "$TMPDIR"; test -d "$TMPDIR" && test -z "$(ls -A "$TMPDIR")"; '
        "exit 7",
    )
    # The command's own exit code comes back, not the entrypoint's.
    assert ran.code == 7, ran.stderr
    assert ran.stdout.split() == [fstype], ran.stdout
    assert f"{fs} on /dev/loop" in ran.stderr
    assert "lab torn down" in ran.stderr


def test_fs_all_mounts_three_filesystems_and_names_them(image: str, leak_guard: None) -> None:
    ran = run(
        image,
        "sh",
        "-c",
        "for k in BTRFS XFS EXT4; do eval d=\\$COWPROBE_LAB_$k; findmnt -n -o FSTYPE -T $d; done",
    )
    assert ran.code == 0, ran.stderr
    assert ran.stdout.split() == ["btrfs", "xfs", "ext4"]


def test_users_own_pytest_gets_tmp_path_on_btrfs(
    image: str, leak_guard: None, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_on_btrfs.py").write_text(
        "import subprocess\n"
        "from probe import ReflinkOutcome, try_reflink\n\n"
        "def test_tmp_path_is_btrfs_and_clones(tmp_path):\n"
        "    fstype = subprocess.run(['findmnt', '-n', '-o', 'FSTYPE', '-T', str(tmp_path)],\n"
        "                            capture_output=True, text=True, check=True).stdout.strip()\n"
        "    assert fstype == 'btrfs'\n"
        "    src = tmp_path / 'src'\n"
        "    src.write_bytes(b'x' * 200_000)\n"
        "    assert try_reflink(src, tmp_path / 'dst') is ReflinkOutcome.CLONED\n"
    )
    ran = run(
        image,
        "--fs",
        "btrfs",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        "/work/junit.xml",
        cwd=project,
    )
    assert ran.code == 0, f"{ran.stdout}\n{ran.stderr}"
    totals = _junit_totals(project / "junit.xml")
    assert totals == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}, totals


def test_failing_user_tests_fail_the_container(
    image: str, leak_guard: None, tmp_path: Path
) -> None:
    (tmp_path / "test_fails.py").write_text("def test_no():\n    assert False\n")
    ran = run(image, "--fs", "ext4", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert ran.code == 1, ran.stderr
    assert "1 failed" in ran.stdout


# ------------------------------------------------------------------ stopping


def _start_sleeper(image: str, fs: str) -> tuple[subprocess.Popen[str], str, str]:
    """A container whose command holds its TMPDIR busy until stopped."""
    name = _name()
    proc = subprocess.Popen(
        [
            str(DOCKER_DIR / "run"),
            "--name",
            name,
            "--fs",
            fs,
            "sh",
            "-c",
            # cwd inside the lab: the unmount meets EBUSY and the lab must
            # still leave no loop device behind.
            'cd "$TMPDIR" && echo "ready $COWPROBE_LAB_BTRFS" && exec sleep 600',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COWPROBE_IMAGE": image},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the lab is up and the command runs
    if not line.startswith("ready "):
        proc.kill()
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        pytest.fail(f"container did not start: {line!r}\n{err}")
    mountpoint = line.split()[1]
    lab_root = str(Path(mountpoint).parent.parent)
    return proc, name, lab_root


def _loops_of(lab_root: str) -> set[str]:
    return {d for d, b in _container_loops().items() if b.startswith(lab_root + "/")}


def test_sigterm_tears_the_lab_down(image: str, leak_guard: None) -> None:
    proc, name, lab_root = _start_sleeper(image, "all")
    try:
        attached = _loops_of(lab_root)
        assert len(attached) == 3, f"expected btrfs, xfs, ext4 loops for {lab_root}: {attached}"
        stop = _docker("stop", name)  # SIGTERM to the entrypoint (PID 1)
        assert stop.returncode == 0, stop.stderr
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + 15, err  # the command died of the forwarded SIGTERM
    assert "stopped by SIGTERM" in err
    assert "lab torn down" in err
    assert not _loops_of(lab_root), "the SIGTERM'd container left loop devices attached"


def test_sigkill_leaves_no_loop_device(image: str, leak_guard: None) -> None:
    """No teardown runs on SIGKILL; autoclear makes the kernel detach the loops."""
    proc, name, lab_root = _start_sleeper(image, "btrfs")
    try:
        assert len(_loops_of(lab_root)) == 1
        kill = _docker("kill", name)
        assert kill.returncode == 0, kill.stderr
        proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + 9
    # No wait needed: the last process of the container detaches its mount
    # namespace on its way out (exit_task_namespaces, then the deferred
    # mntput in its own exit task_work), which unmounts the filesystem and
    # drops the loop's last opener -- all before the process can be reaped,
    # and `docker run` returns only after that.
    assert not _loops_of(lab_root), "loop devices still attached after SIGKILL"
    assert not _our_containers()


# ------------------------------------------------------------------ refusals


def test_missing_privileges_are_named(image: str, leak_guard: None) -> None:
    bare = _docker("run", "--rm", "--name", _name(), image, "true")
    assert bare.returncode == 3
    assert "CAP_SYS_ADMIN" in bare.stderr and "--cap-add SYS_ADMIN" in bare.stderr
    no_loops = _docker(
        "run",
        "--rm",
        "--name",
        _name(),
        "--cap-add",
        "SYS_ADMIN",
        "--device",
        "/dev/loop-control",
        image,
        "true",
    )
    assert no_loops.returncode == 3
    assert "--device-cgroup-rule 'b 7:* rmw'" in no_loops.stderr
    privileged = _docker("run", "--rm", "--name", _name(), "--privileged", image, "true")
    if privileged.returncode != 0:
        # Why docker/run never relies on --privileged (this host is one of them).
        assert "unable to apply caps" in privileged.stderr, privileged.stderr


def test_unknown_fs_is_a_usage_error(image: str, leak_guard: None) -> None:
    ran = run(image, "--fs", "zfs", "true")
    assert ran.code == 2
    assert "FS='zfs'" in ran.stderr and "btrfs, xfs, ext4, overlay-xfs" in ran.stderr


def test_ensure_dockerd_names_no_daemon_it_did_not_start(image: str) -> None:
    # The image fixture has a daemon answering: a second call starts none,
    # so it must print no pid (a pid printed here would be stopped by a
    # caller that never started it).
    res = subprocess.run([str(DOCKER_DIR / "ensure-dockerd"), "--print-started"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout == "", res


def test_stop_dockerd_touches_nothing_but_a_dockerd() -> None:
    other = subprocess.Popen(["sleep", "600"])
    try:
        res = subprocess.run([str(DOCKER_DIR / "stop-dockerd"), str(other.pid)],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
