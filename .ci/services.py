"""Start the local PostgreSQL and MariaDB when they do not respond.

The test suite needs both on loopback (PostgreSQL on 5432, MariaDB on
3306). Machines of this project start them at boot; this script only
restarts one that has stopped, and says so when it cannot.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

SERVICES = {
    "PostgreSQL": (5432, "pg_ctlcluster"),
    "MariaDB": (3306, "mariadbd"),
}


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_command(name: str) -> list[str] | None:
    if name == "PostgreSQL" and shutil.which("pg_ctlcluster"):
        versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
        if versions:
            return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                    "start"]
    if name == "MariaDB" and os.path.exists("/usr/sbin/mariadbd"):
        return ["start-stop-daemon", "--start", "--oknodo", "--background",
                "--exec", "/usr/sbin/mariadbd"]
    return None


def main() -> int:
    for name, (port, _) in SERVICES.items():
        if is_listening(port):
            continue
        command = start_command(name)
        if command is None:
            print(f"{name} is not listening on 127.0.0.1:{port} and cannot be started "
                  "here; its tests will skip (or fail with CI=true).", file=sys.stderr)
            continue
        print(f"Starting {name}: {' '.join(command)}", file=sys.stderr)
        subprocess.run(command, check=False)
        for _ in range(30):
            if is_listening(port):
                break
            time.sleep(1)
        else:
            print(f"{name} did not start on 127.0.0.1:{port}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
