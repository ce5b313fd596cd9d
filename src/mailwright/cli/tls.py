"""``mailwright tls ...``: make a self-signed test certificate, check the configured one.

``selfsigned`` writes a certificate and key (EC P-256, SHA-256) for the host name,
``localhost``, 127.0.0.1 and ::1 (plus any ``--name``), to the paths of ``[tls]``
or the ones given; the key file is created mode 0600 and existing files are only
replaced with ``--force``. ``check`` loads the configured pair as the daemon
would. Settings: ``hostname``, ``tls.certificate``, ``tls.key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import click

from mailwright.cli.output import fail
from mailwright.cli.settings import load_or_exit
from mailwright.core.sysexits import ExitCode


@click.group()
def tls() -> None:
    """Server certificates for STARTTLS and implicit TLS."""


def make_selfsigned(names: list[str], days: int) -> tuple[bytes, bytes]:
    """PEM certificate and PEM (unencrypted PKCS#8) key for ``names`` (DNS names or IPs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@tls.command("selfsigned")
@click.option("--cert", "cert_path", type=click.Path(path_type=Path), help="Certificate file.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Key file.")
@click.option("--name", "names", multiple=True, help="Another host name or IP (repeatable).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--force", is_flag=True, help="Replace existing files.")
@click.pass_context
def selfsigned(
    ctx: click.Context,
    cert_path: Path | None,
    key_path: Path | None,
    names: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Make a self-signed certificate for testing (not for the public internet).

    \b
    Examples:
      mailwright tls selfsigned                     # to [tls] certificate / key
      mailwright tls selfsigned --cert c.pem --key k.pem --name mx.example.com
    """
    settings = load_or_exit(ctx)
    cert_path = cert_path or settings.tls.certificate
    key_path = key_path or settings.tls.key or settings.tls.certificate
    if cert_path is None or key_path is None:
        fail("say where: --cert FILE --key FILE, or set [tls] certificate and key", 64)
        return
    if cert_path == key_path:
        fail("give the key its own file (--key, or [tls] key)", ExitCode.USAGE)
    all_names = [*names, settings.hostname, "localhost", "127.0.0.1", "::1"]
    cert_pem, key_pem = make_selfsigned(all_names, days)
    try:
        _write(key_path, key_pem, 0o600, force)
        _write(cert_path, cert_pem, 0o644, force)
    except FileExistsError as exc:
        fail(f"{exc.filename}: exists (use --force to replace it)", ExitCode.CANTCREAT)
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}", ExitCode.CANTCREAT)
    click.echo(f"certificate {cert_path}, key {key_path}: {', '.join(dict.fromkeys(all_names))}")


@tls.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Load the configured certificate and key as the daemon would.

    \b
    Example:
      mailwright tls check
    """
    from mailwright.edge.tls import TlsSetupError, server_context

    settings = load_or_exit(ctx)
    if settings.tls.certificate is None:
        click.echo("no certificate configured: STARTTLS is not offered")
        return
    try:
        server_context(settings.tls)
    except TlsSetupError as exc:
        fail(str(exc), ExitCode.CONFIG)
        return
    click.echo(f"{settings.tls.certificate}: OK, {describe(settings.tls.certificate)}")


def describe(path: Path) -> str:
    """Names and expiry of the first certificate in a PEM file."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in alt]
    except x509.ExtensionNotFound:
        names = [cert.subject.rfc4514_string()]
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"names {', '.join(names)}; valid until {until}"
