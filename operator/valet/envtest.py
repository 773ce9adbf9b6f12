"""A real Kubernetes control plane on loopback, the way controller-runtime's envtest runs one.

``start()`` runs etcd and kube-apiserver from the directory named by ``KUBEBUILDER_ASSETS``
(envtest's convention), plus kube-controller-manager and kube-scheduler when that directory
has them (garbage collection, namespace deletion, node lifecycle, service accounts). Ports
are free loopback ports; the certificates (a CA for clients and serving, the service-account
signing key) are made here. There are no kubelets: ``valet.simnodes`` plays them.

It owns processes and files only; the tests' fixture, the demo and the benchmarks reuse it.
Every process dies with the one that started it (``PR_SET_PDEATHSIG``), also when that one
is killed; ``stop()`` (called on any exception, and by ``running()`` on exit) ends them and
removes the working directory in /tmp.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import datetime
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ASSETS_ENV = "KUBEBUILDER_ASSETS"
HOW_TO_GET_ASSETS = (
    "set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd "
    "(`setup-envtest use 1.36.x -p path` prints one; `make envtest` unpacks the bundled copy)"
)
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the failing process's log."""


def assets_dir() -> Path | None:
    """The envtest binaries named by ``KUBEBUILDER_ASSETS``, if they are there."""
    value = os.environ.get(ASSETS_ENV)
    if not value:
        return None
    path = Path(value)
    return path if (path / "kube-apiserver").exists() and (path / "etcd").exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def issue(
        self, common_name: str, organizations: Sequence[str] = (), *, server: bool = False
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, PEM-encoded."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        builder = _builder(x509.Name(subject), self.cert.subject, key.public_key())
        usage = x509.oid.ExtendedKeyUsageOID
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]), False
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)

    @property
    def pem(self) -> bytes:
        return _pem_cert(self.cert)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
    )


def _new_ca() -> _CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "valet-envtest-ca")])
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .sign(key, hashes.SHA256())
    )
    return _CA(key, cert)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# --- the control plane -------------------------------------------------------------------


@dataclasses.dataclass
class ControlPlane:
    """A running control plane: its URL, an admin kubeconfig, and clients for other identities."""

    url: str
    workdir: Path
    admin_kubeconfig: Path
    components: tuple[str, ...]
    _ca: _CA
    _processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    @property
    def has_controllers(self) -> bool:
        """kube-controller-manager runs: garbage collection, namespaces, node lifecycle."""
        return "kube-controller-manager" in self.components

    def kubeconfig_for_user(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating with a client certificate (CN=user, O=groups)."""
        cert, key = self._ca.issue(user, groups)
        return self._write_kubeconfig(
            _safe(user), {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
        )

    def kubeconfig_for_token(self, name: str, token: str) -> Path:
        """A kubeconfig authenticating with a bearer token (e.g. from ``service_account_token``)."""
        return self._write_kubeconfig(_safe(name), {"token": token})

    def service_account_token(
        self,
        namespace: str,
        service_account: str,
        *,
        bound_pod: tuple[str, str] | None = None,
        seconds: int = 3600,
    ) -> str:
        """A token from the TokenRequest API; ``bound_pod=(name, uid)`` binds it to a pod, so
        the API server adds the pod's node to the token's claims (as the kubelet's do)."""
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        if bound_pod is not None:
            body["spec"]["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": bound_pod[0],
                "uid": bound_pod[1],
            }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        return str(self.request("POST", path, body)["status"]["token"])

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One admin request (for set-up; the code under test uses its own client)."""
        connection = self._connection()
        try:
            payload = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise ControlPlaneError(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data) if data else None

    def stop(self) -> None:
        for name in reversed(list(self._processes)):
            _terminate(self._processes.pop(name))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        context.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        host, port = self.url.removeprefix("https://").split(":")
        return http.client.HTTPSConnection(host, int(port), context=context, timeout=10)

    def _write_kubeconfig(self, name: str, user: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self._ca.pem),
                    },
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "envtest", "user": name}}],
            "current-context": name,
        }
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def start(
    assets: Path | None = None,
    *,
    controllers: bool = True,
    scheduler: bool = True,
    timeout: float = 60.0,
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> ControlPlane:
    """Start etcd and kube-apiserver (and the controller-manager and scheduler when present
    and asked for); return when ``/readyz`` answers ok. Raises ``ControlPlaneError``.
    ``extra_args`` adds flags by component name (e.g. an audit log for "kube-apiserver"),
    after the ones here: a flag given again overrides."""
    assets = assets or assets_dir()
    extra = {name: list(args) for name, args in (extra_args or {}).items()}
    if assets is None:
        raise ControlPlaneError(f"no envtest assets: {HOW_TO_GET_ASSETS}")
    workdir = Path(tempfile.mkdtemp(prefix="valet-envtest-"))
    ca = _new_ca()
    _write(workdir / "ca.crt", ca.pem)
    _write(workdir / "ca.key", _pem_key(ca.key))
    for name, (cert, key) in {
        "server": ca.issue("kube-apiserver", server=True),
        "admin": ca.issue("valet-envtest-admin", ["system:masters"]),
    }.items():
        _write(workdir / f"{name}.crt", cert)
        _write(workdir / f"{name}.key", key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(workdir / "sa.key", _pem_key(sa_key))
    _write(
        workdir / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    url = f"https://127.0.0.1:{api_port}"
    components = ["etcd", "kube-apiserver"]
    plane = ControlPlane(url, workdir, workdir / "kubeconfig-admin", (), ca)
    plane._write_kubeconfig(
        "admin",
        {
            "client-certificate-data": _b64((workdir / "admin.crt").read_bytes()),
            "client-key-data": _b64((workdir / "admin.key").read_bytes()),
        },
    )
    admin = plane.admin_kubeconfig

    def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        return _spawn(workdir, assets / name, [*args, *extra.get(name, ())])

    try:
        plane._processes["etcd"] = spawn(
            "etcd",
            [
                f"--data-dir={workdir / 'etcd'}",
                "--name=default",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
            ],
        )
        plane._processes["kube-apiserver"] = spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--endpoint-reconciler-type=none",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--client-ca-file={workdir / 'ca.crt'}",
                f"--tls-cert-file={workdir / 'server.crt'}",
                f"--tls-private-key-file={workdir / 'server.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={workdir / 'sa.key'}",
            ],
        )
        _await_ready(plane, timeout)
        if controllers and (assets / "kube-controller-manager").exists():
            components.append("kube-controller-manager")
            plane._processes["kube-controller-manager"] = spawn(
                "kube-controller-manager",
                [
                    f"--kubeconfig={admin}",
                    "--leader-elect=false",
                    "--controllers=*,-service-ca-certificate-publisher-controller",
                    "--use-service-account-credentials",
                    f"--root-ca-file={workdir / 'ca.crt'}",
                    f"--service-account-private-key-file={workdir / 'sa.key'}",
                    f"--cluster-signing-cert-file={workdir / 'ca.crt'}",
                    f"--cluster-signing-key-file={workdir / 'ca.key'}",
                    "--allocate-node-cidrs",
                    "--cluster-cidr=10.244.0.0/16",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                ],
            )
        if scheduler and (assets / "kube-scheduler").exists():
            components.append("kube-scheduler")
            plane._processes["kube-scheduler"] = spawn(
                "kube-scheduler",
                [
                    f"--kubeconfig={admin}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                ],
            )
        plane.components = tuple(components)
        if plane.has_controllers:
            _await_default_service_account(plane, timeout)
        return plane
    except BaseException:
        plane.stop()
        raise


@contextlib.contextmanager
def running(assets: Path | None = None, **options: Any) -> Iterator[ControlPlane]:
    plane = start(assets, **options)
    try:
        yield plane
    finally:
        plane.stop()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(workdir: Path, binary: Path, args: list[str]) -> subprocess.Popen[bytes]:
    log = (workdir / f"{binary.name}.log").open("wb")
    return subprocess.Popen(
        [str(binary), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        preexec_fn=_die_with_parent,  # only prctl, before exec
    )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(plane: ControlPlane, name: str) -> str:
    path = plane.workdir / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _await_ready(plane: ControlPlane, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, process in plane._processes.items():
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}:\n{_log_tail(plane, name)}"
                )
        try:
            connection = plane._connection()
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            connection.close()
            if response.status == 200:
                return
            last = body
        except (OSError, http.client.HTTPException) as error:
            last = str(error)
        time.sleep(0.2)
    raise ControlPlaneError(
        f"kube-apiserver not ready after {timeout}s ({last[-500:]}):\n"
        f"{_log_tail(plane, 'kube-apiserver')}"
    )


def _await_default_service_account(plane: ControlPlane, timeout: float) -> None:
    """The controller-manager is up once it gave ``default`` its ServiceAccount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ControlPlaneError, OSError):
            plane.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return
        time.sleep(0.2)
    raise ControlPlaneError(
        "kube-controller-manager made no ServiceAccount in 'default':\n"
        f"{_log_tail(plane, 'kube-controller-manager')}"
    )
