"""Content credentials: sign a finished file with a C2PA manifest, and read one back.

``sign`` embeds a manifest (c2pa-python 0.38, c2pa-rs 0.91) that says framefold made the
file with a trained or algorithmic model (IPTC digital source type), names the input photo
as an ``inputTo`` ingredient, declares AI training, generative training, data mining and
inference ``notAllowed`` (``cawg.training-mining``), and carries framefold's provenance
record (``org.framefold.provenance``). ``read`` validates a file and reduces c2pa's report
to a small dict: ``trusted`` / ``valid`` / ``invalid`` / ``absent`` / ``unsupported``.

Sign last: the manifest binds the exact bytes (mp4: every box but the manifest's own), so
any remux, tag edit or re-encode after signing makes the file ``invalid``. Nothing here
touches the network: remote manifests and OCSP are never fetched, and a timestamp
authority is contacted only when ``SignerConfig.tsa_url`` is set. ``check`` finds what a user
can fix in a signer before any work (``tasks.preflight`` runs it).

    signer = SignerConfig(cert=Path("chain.pem"), key=Path("signer.key"))
    sign(video, signer=signer, title="a.mp4", source_type=IPTC + "trainedAlgorithmicMedia",
         record=provenance_record, ingredient=Path("input.png"))
    read(video, trust_anchors=root_ca_pem)["state"]   # "trusted"
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import mimetypes
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from manifests.job import SignerConfig  # where the signing identity lives (pure data)
from tasks import store
from tasks.provenance import version

# File suffix -> MIME type of the outputs that carry credentials here. Each was signed and
# validated (trusted, tamper detected) with c2pa-python 0.38.1; webm is not supported.
SUPPORTED: dict[str, str] = {".mp4": "video/mp4", ".gif": "image/gif", ".jpg": "image/jpeg"}
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
LABEL = "org.framefold.provenance"
TRAINING_MINING = "cawg.training-mining"
# Extended key usages C2PA accepts for a claim signer (c2pa-rs' default trust config):
# emailProtection, documentSigning, timeStamping, OCSPSigning, MS document signing, C2PA claim signing.
_SIGNER_EKUS = {"1.3.6.1.5.5.7.3.4", "1.3.6.1.5.5.7.3.36", "1.3.6.1.5.5.7.3.8", "1.3.6.1.5.5.7.3.9",
                "1.3.6.1.4.1.311.76.59.1.9", "1.3.6.1.4.1.62558.2.1"}
# The curve each ECDSA algorithm needs.
_CURVES = {"es256": "secp256r1", "es384": "secp384r1", "es512": "secp521r1"}
_NO_NETWORK = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_INPUT_LABEL = "framefold.input"  # links the c2pa.created action to the ingredient


class CredentialError(Exception):
    """A file could not be signed. The message says why and what to change; the file is
    left as it was."""


def check(signer: SignerConfig) -> list[str]:
    """Problems of ``signer`` a user can fix before signing; an empty list means none were found.

    Looks at the files (present, readable, PEM), the key (unencrypted, matches the first
    certificate, suits ``alg``) and the first certificate (not a CA, not self-signed,
    ``digitalSignature`` usage, an extended key usage C2PA accepts, within its validity
    dates, followed by the certificate that issued it).
    """
    problems: list[str] = []
    certs = _load(signer.cert, "cert", problems, _parse_certs)
    key = _load(signer.key, "key", problems, _parse_key)
    if certs:
        problems += _check_cert(signer.cert, certs)
    if key is not None:
        problems += _check_alg(signer.alg, key)
    if certs and key is not None and _spki(certs[0].public_key()) != _spki(key.public_key()):
        problems.append(f"key: {signer.key} does not match the first certificate in {signer.cert} "
                        f"({_cn(certs[0])}); pass that certificate's private key")
    return problems


def sign(path: Path, *, signer: SignerConfig, title: str, source_type: str, record: dict,
         ingredient: Path | None = None, software: str = "framefold", suffix: str | None = None) -> dict:
    """Sign the file at ``path`` in place with a C2PA manifest.

    The signed file is written next to ``path``, synced, validated, then moved over it
    (``os.replace``): on any failure ``path`` keeps its original bytes.

    The manifest holds ``claim_generator_info`` (framefold and its version); a
    ``c2pa.actions.v2`` assertion with one ``c2pa.created`` action whose
    ``digitalSourceType`` is ``source_type`` (a full IPTC URL) and whose ``softwareAgent``
    is ``software`` (with framefold's version when it is framefold); ``ingredient`` (the
    input photo), when given, as an ``inputTo`` ingredient linked from that action, with
    its sha256 in the ingredient's metadata — a file c2pa cannot parse is recorded by
    title, MIME type and sha256 only, never failing the signing; a
    ``cawg.training-mining`` assertion (AI training, generative training, data mining,
    inference: ``notAllowed``); and ``record`` as the assertion
    ``org.framefold.provenance`` (CBOR; ``read`` returns it unchanged). ``suffix`` names
    the format when the path's own does not (a temporary file).

    Returns ``{"state": "signed", "alg", "manifest_label", "source_type"}``. Raises
    :class:`CredentialError` when the file cannot be signed (unsupported format, missing
    file, unusable certificate or key) and ``ValueError`` for a malformed argument.
    """
    path = Path(path)
    suffix = suffix or path.suffix
    mime = SUPPORTED.get(suffix.lower())
    if mime is None:
        raise CredentialError(f"{path}: {suffix or 'a file without suffix'} cannot carry C2PA credentials; "
                              f"supported: {', '.join(SUPPORTED)} — sign one of those renditions instead")
    if not path.is_file():
        raise CredentialError(f"{path} does not exist; sign the file after it is written")
    if not source_type.startswith(IPTC) or source_type == IPTC:
        raise ValueError(f"source_type must be an IPTC digital source type URL ({IPTC}…), got {source_type!r}")
    try:
        record = json.loads(json.dumps(record, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"record must be plain JSON (str keys, no NaN), got {e}") from None
    if ingredient is not None and not Path(ingredient).is_file():
        raise CredentialError(f"ingredient {ingredient} does not exist; pass the input image the video was made from")

    definition = _definition(title=title, source_type=source_type, record=record, software=software)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".signing", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as dst:
            os.fchmod(dst.fileno(), stat.S_IMODE(path.stat().st_mode))
            _sign_into(path, dst, mime=mime, definition=definition, signer=signer,
                       ingredient=Path(ingredient) if ingredient is not None else None)
        check = _read(tmp, mime=mime, trust_anchors=None)
        if check["state"] not in ("trusted", "valid"):
            raise CredentialError(f"{path}: the signed file did not validate ({'; '.join(check['errors'])}); "
                                  "the original is unchanged")
        store.commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"state": "signed", "alg": signer.alg, "manifest_label": check["manifest_label"], "source_type": source_type}


def read(path: Path, *, trust_anchors: str | None = None) -> dict:
    """Read and validate the C2PA manifest of the file at ``path``; never fetches anything.

    ``trust_anchors``: PEM text of root CA certificates the signer may chain to. Returns
    ``state``: ``trusted`` (intact, signer chains to an anchor), ``valid`` (intact,
    signer not trusted), ``invalid`` (a hash, signature or certificate check failed),
    ``absent`` (no manifest) or ``unsupported`` (format cannot carry one); ``tampered``
    (a hash or binding check failed — the bytes changed after signing);
    ``digital_source_type`` (of the ``c2pa.created`` action), ``signer`` (certificate
    common name, else issuer), ``title``, ``manifest_label``, ``framefold`` (the
    ``org.framefold.provenance`` record) and ``errors`` (``"code: explanation"`` of each
    failed check).

    A missing file raises ``FileNotFoundError``; files without credentials or with broken
    ones never raise.
    """
    path = Path(path)
    return _read(path, mime=SUPPORTED.get(path.suffix.lower()), trust_anchors=trust_anchors)


# -- signing ---------------------------------------------------------------------------


def _definition(*, title: str, source_type: str, record: dict, software: str) -> dict:
    agent = {"name": software, "version": version()} if software == "framefold" else {"name": software}
    return {
        "claim_generator_info": [{"name": "framefold", "version": version()}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": agent},
            ]}},
            {"label": TRAINING_MINING, "data": {"entries": {
                f"cawg.{use}": {"use": "notAllowed"}
                for use in ("ai_training", "ai_generative_training", "data_mining", "ai_inference")
            }}},
            {"label": LABEL, "data": record},
        ],
    }


def _sign_into(src_path: Path, dst, *, mime: str, definition: dict, signer: SignerConfig,
               ingredient: Path | None) -> None:
    """Write the signed copy of ``src_path`` into the open file ``dst``."""
    try:
        cert, key = signer.cert.read_bytes(), signer.key.read_bytes()
    except OSError as e:
        raise CredentialError(f"cannot read {e.filename}: {e.strerror}; check SignerConfig.cert and .key") from None
    info = c2pa.C2paSignerInfo(signer.alg, cert, key, signer.tsa_url)
    try:
        with c2pa.Context.from_dict(_NO_NETWORK) as ctx, c2pa.Signer.from_info(info) as c2pa_signer:
            builder = _builder(definition, ctx, ingredient)
            with builder, open(src_path, "rb") as src:
                builder.sign(c2pa_signer, mime, src, dst)
    except c2pa.C2paError as e:
        problems = check(signer)
        hint = ("; fix the signer: " + "; ".join(problems)) if problems else ""
        raise CredentialError(f"c2pa could not sign {src_path}: {_short(str(e))}{hint}") from None


def _builder(definition: dict, ctx: c2pa.Context, ingredient: Path | None) -> c2pa.Builder:
    """A Builder for ``definition``, with ``ingredient`` linked to the created action. An
    ingredient c2pa cannot parse is described (title, type, sha256) instead of read."""
    if ingredient is None:
        return c2pa.Builder(definition, context=ctx)
    definition = json.loads(json.dumps(definition))
    definition["assertions"][0]["data"]["actions"][0]["parameters"] = {"ingredientIds": [_INPUT_LABEL]}
    entry = {"title": ingredient.name, "relationship": "inputTo", "label": _INPUT_LABEL,
             "metadata": {"org.framefold.sha256": hashlib.sha256(ingredient.read_bytes()).hexdigest()}}
    fmt = mimetypes.guess_type(ingredient.name)[0] or "application/octet-stream"
    builder = c2pa.Builder(definition, context=ctx)
    try:
        with open(ingredient, "rb") as f:
            builder.add_ingredient(entry, fmt, f)
        return builder
    except c2pa.C2paError:
        builder.close()
    definition["ingredients"] = [dict(entry, format=fmt)]
    return c2pa.Builder(definition, context=ctx)


# -- reading ---------------------------------------------------------------------------


def _read(path: Path, *, mime: str | None, trust_anchors: str | None) -> dict:
    """``read`` with the MIME type given (the signing temp file has no telling suffix)."""
    result: dict[str, Any] = {"state": "absent", "tampered": False, "digital_source_type": None, "signer": None,
                              "title": None, "manifest_label": None, "framefold": None, "errors": []}
    if trust_anchors is not None and (not isinstance(trust_anchors, str)
                                      or "-----BEGIN CERTIFICATE-----" not in trust_anchors):
        raise ValueError("trust_anchors must be the PEM text of root CA certificates "
                         f"(-----BEGIN CERTIFICATE-----…), got {str(trust_anchors)[:40]!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if mime is None:
        result.update(state="unsupported", errors=[f"{path.suffix or 'no suffix'}: cannot carry C2PA credentials"])
        return result
    settings = dict(_NO_NETWORK, trust={"user_anchors": trust_anchors}) if trust_anchors else _NO_NETWORK
    try:
        with c2pa.Context.from_dict(settings) as ctx, open(path, "rb") as f:
            reader = c2pa.Reader.try_create(mime, f, None, ctx)
            if reader is None:
                return result
            with reader:
                store = json.loads(reader.json())
                record = _record(json.loads(reader.crjson()), store.get("active_manifest"))
    except c2pa.C2paError.NotSupported as e:
        result.update(state="unsupported", errors=[_short(str(e))])
        return result
    except c2pa.C2paError as e:  # a manifest is there but cannot be parsed
        result.update(state="invalid", errors=[f"manifest unreadable: {_short(str(e))}"])
        return result
    return _summary(store, record, result)


def _record(crjson: dict, label: str | None) -> dict | None:
    """framefold's assertion, taken from the crJSON view: ``Reader.json()`` in c2pa 0.38.1
    garbles arrays of numbers in custom assertions (``[32, 32]`` comes back as base64
    ``"ICA="``, ``[0.5]`` as ``""``), while crJSON decodes the stored CBOR faithfully."""
    for manifest in crjson.get("manifests", []):
        if manifest.get("label") == label:
            return (manifest.get("assertions") or {}).get(LABEL)
    return None


def _summary(store: dict, record: dict | None, result: dict[str, Any]) -> dict[str, Any]:
    label = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(label, {}) if label else {}
    failures = _failures(store)
    state = {"Trusted": "trusted", "Valid": "valid"}.get(store.get("validation_state", ""), "invalid")
    info = manifest.get("signature_info") or {}
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    created = next((a for a in actions if a.get("action") == "c2pa.created"), {})
    result.update(
        state=state,
        tampered=any(f.get("code", "").endswith(".mismatch") for f in failures),
        digital_source_type=created.get("digitalSourceType"),
        signer=info.get("common_name") or info.get("issuer"),
        title=manifest.get("title"),
        manifest_label=label,
        framefold=record,
        errors=[_short(f"{f.get('code')}: {f.get('explanation', '')}") for f in failures],
    )
    return result


def _failures(store: dict) -> list[dict]:
    """Failed checks of the active manifest (c2pa 2.x ``validation_results``; older
    ``validation_status`` lists only failures)."""
    results = store.get("validation_results")
    if results is None:
        return list(store.get("validation_status") or [])
    return list((results.get("activeManifest") or {}).get("failure") or [])


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- certificate checks ----------------------------------------------------------------


def _load(path: Path, what: str, problems: list[str], parse):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{what}: {path} does not exist")
        return None
    except OSError as e:
        problems.append(f"{what}: cannot read {path}: {e.strerror}")
        return None
    try:
        return parse(data)
    except ValueError as e:
        problems.append(f"{what}: {path}: {e}")
        return None


def _parse_certs(data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)") from None
    return certs


def _parse_key(data: bytes):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; c2pa needs an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM private key (expected -----BEGIN PRIVATE KEY-----)") from None


def _check_cert(path: Path, certs: list[x509.Certificate]) -> list[str]:
    leaf, problems = certs[0], []
    name = f"the first certificate in {path} ({_cn(leaf)})"
    if _ext(leaf, x509.BasicConstraints) is not None and _ext(leaf, x509.BasicConstraints).ca:
        problems.append(f"cert: {name} is a CA; sign with an end-entity certificate (CA:FALSE) issued by it")
    if _issued_by(leaf, leaf):
        problems.append(f"cert: {name} is self-signed; C2PA readers never trust it — use an end-entity "
                        "certificate issued by an intermediate CA, followed by that intermediate")
    elif len(certs) == 1:
        problems.append(f"cert: {path} holds only the signer certificate; append its intermediate CA "
                        "certificate(s) after it so readers can build the chain")
    elif not _issued_by(leaf, certs[1]):
        problems.append(f"cert: the second certificate in {path} ({_cn(certs[1])}) did not issue the first; "
                        "order the PEM as end-entity, then its issuer")
    usage = _ext(leaf, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        problems.append(f"cert: {name} lacks keyUsage digitalSignature")
    ekus = _ext(leaf, x509.ExtendedKeyUsage)
    if ekus is None or not {oid.dotted_string for oid in ekus} & _SIGNER_EKUS:
        problems.append(f"cert: {name} lacks an extended key usage C2PA accepts "
                        f"(e.g. emailProtection {ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string})")
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        problems.append(f"cert: {name} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d} "
                        f"to {leaf.not_valid_after_utc:%Y-%m-%d}")
    return problems


def _check_alg(alg: str, key) -> list[str]:
    if alg in _CURVES:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != _CURVES[alg]:
            return [f"alg: {alg} needs an EC {_CURVES[alg]} key, the key is {_describe(key)}"]
    elif alg.startswith("ps"):
        if not isinstance(key, rsa.RSAPrivateKey):
            return [f"alg: {alg} needs an RSA key, the key is {_describe(key)}"]
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        return [f"alg: {alg} needs an Ed25519 key, the key is {_describe(key)}"]
    return []


def _describe(key) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ext(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
