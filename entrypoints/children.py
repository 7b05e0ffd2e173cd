"""Child processes that end with the process that started them, even when it is SIGKILLed.

A child started with `start_new_session=True` (the Temporal dev server) sees no Ctrl-C and no
signal of its parent's; if the parent is killed with SIGKILL (`timeout`, the OOM killer) nothing
stops it, and it runs on re-parented to init. Linux's parent-death signal closes that gap:
`die_with_parent` prefixes an argv with util-linux's `setpriv --pdeathsig TERM --`, which sets
`PR_SET_PDEATHSIG` (prctl(2)) on itself and then execs the command in place — same pid, and the
setting survives execve(2) (prctl(2): it is cleared only for set-user-ID/set-group-ID programs or
ones with file capabilities). It is not a Python `preexec_fn`: that runs Python between fork and
exec, which is unsafe in a process with other threads (Temporal core's Rust threads).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence

# What any program needs from its environment: where programs and the home directory are, who
# runs it, its language and time zone, where temporary files go (and Windows' system root).
_PROCESS_BASICS = re.compile(
    r"PATH|HOME|USER|LOGNAME|SHELL|LANG|LANGUAGE|LC_[A-Z_]+|TZ|TMPDIR|TEMP|TMP|SYSTEMROOT"
)


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to give a program we start that is not ours (the Temporal dev server):
    only the basics every program reads (`PATH`, `HOME`, `USER`, `LANG`, `LC_*`, `TZ`,
    `TMPDIR`, ...) from `environ` (default `os.environ`); the child's own configuration is its
    argv.

    Everything else stays with us, for two reasons. Credentials: `CAMPAIGN_ENGINE_*` holds the
    payload keys, SMTP and IMAP passwords, the key pepper. Variables meant for us that the child
    reads differently: `OTEL_TRACES_EXPORTER=console` configures our tracing, and the dev
    server, which reads `OTEL_*` too, refuses it and exits 1 (`make dev` failed); `TEMPORAL_*`
    describe the cluster our clients connect to, not a dev server to start.
    """
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if _PROCESS_BASICS.fullmatch(name)}


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """The argv to spawn so that `argv`'s process gets SIGTERM when its parent dies, however it
    dies (SIGKILL included): `[<setpriv>, "--pdeathsig", "TERM", "--", *argv]`, with setpriv's
    absolute path (so a child environment without PATH still finds it), when running on Linux and
    `shutil.which("setpriv")` finds util-linux's setpriv(1); otherwise `list(argv)` unchanged.

    `argv` is the program and its arguments, as for `asyncio.create_subprocess_exec`; it is not
    changed, and the result is a new list. The rule is prctl(2) `PR_SET_PDEATHSIG`, set by
    setpriv(1) `--pdeathsig` before it execs `argv[0]` (execvp: looked up on the child's PATH when
    it has no slash, so prefer an absolute path). setpriv execs in place, so the spawned pid is
    the command's own: signals, `os.killpg` after `start_new_session=True`, and /proc readings
    reach it, not a wrapper; its exit status is the command's.

    Callers need to know:

    - The signal is sent when the **thread** that forked the child exits, not the process
      (prctl(2)). `asyncio.create_subprocess_exec` forks from the thread running the event loop,
      and `subprocess.Popen` from the calling thread: spawn from a thread that lives as long as
      the child should (the main thread's loop does; a loop in a short-lived thread does not).
    - The fallback (another OS, or no setpriv installed: `apt-get install util-linux`) changes
      nothing: the child then outlives a parent killed with SIGKILL, as before; stop it yourself.
    - A parent that dies between the fork and setpriv's prctl call (microseconds) is not noticed.
    - The child gets SIGTERM, so it shuts down as on an ordinary stop; its own children are not
      signalled (the setting is not inherited across fork).

    Raises nothing. Behind setpriv, a program that is missing or not executable no longer raises
    FileNotFoundError/PermissionError at spawn: the spawn succeeds and the process exits 127/126
    (setpriv's message on its stderr), so check a program exists first if the caller needs that
    error (`DevServer` does: `temporal_cli()`).
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]
