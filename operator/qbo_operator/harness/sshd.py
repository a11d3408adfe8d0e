"""A real SFTP server for tests and the demo: Debian's OpenSSH `sshd` with `internal-sftp`, on loopback.

Keys are generated per server (asyncssh, no ssh-keygen run): the host key, which clients pin as a `known_hosts`
line (no trust on first use), and the client key in `authorized_keys`. The server logs in only the user running
it (root included: `PermitRootLogin prohibit-password`) and only with that key. Faults the delivery must name
are the server's own behaviour, not imitations: `read_only` runs `internal-sftp -R` (every write is refused with
"permission denied"); `file_size_limit` caps the file size the SFTP session may write (RLIMIT_FSIZE; OpenSSH
answers a write past it exactly as it answers a full disk, SSH_FX_FAILURE); `stop()` is a server that is down."""

from __future__ import annotations

import getpass
import os
import resource
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from qbo_operator.harness.controlplane import free_port, terminate_group
from qbo_operator.harness.polling import wait_for

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # OpenSSH refuses to start as root without it


class SshdUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class KeyPair:
    private: str  # OpenSSH private key text (unencrypted)
    public: str  # one authorized_keys / known_hosts key: "ssh-ed25519 AAAA…"

    @classmethod
    def generate(cls) -> KeyPair:
        key = asyncssh.generate_private_key("ssh-ed25519")
        return cls(key.export_private_key("openssh").decode(), key.export_public_key("openssh").decode().strip())


class SftpServer:
    """One sshd on 127.0.0.1; `start()`, `stop()`, and the paths and keys a client needs."""

    def __init__(self, root: Path, *, read_only: bool = False, file_size_limit: int | None = None) -> None:
        if not SSHD.exists():
            raise SshdUnavailable(f"{SSHD} is missing: run `make system-packages` (Debian package openssh-server)")
        self.root = root
        self.host = "127.0.0.1"
        self.port = free_port()
        self.username = getpass.getuser()
        self.directory = root / "incoming"  # the remote directory, as an absolute path on this machine
        self.host_key = KeyPair.generate()
        self.client_key = KeyPair.generate()
        self.read_only = read_only
        self.file_size_limit = file_size_limit
        self.log = root / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def known_hosts(self) -> str:
        """The pinned host key line for this server's address."""
        return f"[{self.host}]:{self.port} {self.host_key.public}\n"

    def _write_files(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.directory.mkdir(exist_ok=True)
        host_key = self.root / "ssh_host_ed25519_key"
        host_key.write_text(self.host_key.private)
        host_key.chmod(0o600)
        authorized = self.root / "authorized_keys"
        authorized.write_text(self.client_key.public + "\n")
        authorized.chmod(0o600)
        sftp = "internal-sftp -R" if self.read_only else "internal-sftp"
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.username}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the keys live under /tmp, which is world-writable
                    "PidFile none",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    f"Subsystem sftp {sftp}",
                    f"ForceCommand {sftp}",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return config

    def start(self) -> SftpServer:
        config = self._write_files()
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SshdUnavailable(f"sshd refused its configuration: {check.stderr.strip()}")
        limit = self.file_size_limit

        def limits() -> None:
            os.setsid()
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not kills
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=limits,  # setsid and the limits must precede exec
                restore_signals=False,
            )
        wait_for(f"sshd on {self.host}:{self.port}", self._listening, timeout=20)
        return self

    def _listening(self) -> bool | None:
        if self._proc is not None and self._proc.poll() is not None:
            raise SshdUnavailable(f"sshd exited with {self._proc.returncode}; see {self.log}")
        return True if "Server listening" in self.log.read_text(errors="replace") else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            terminate_group(self._proc.pid, self._proc, grace=5)
        self._proc = None

    def files(self) -> list[Path]:
        """The files a receiver would pick up: every visible (not dot) file in the directory, by name."""
        return sorted(p for p in self.directory.iterdir() if not p.name.startswith("."))
