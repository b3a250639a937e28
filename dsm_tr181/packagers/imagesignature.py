"""The signature of an image being installed: the ``Signature`` input, or one its registry stores.

What is signed (:mod:`dsm_tr181.signing.images`) is the text ``sha256:<hex>`` of

* for an ``oci://`` reference: the digest of the document the reference names (the image
  manifest, or the index a multi-platform tag names; that index lists the chosen
  manifest's digest, which is checked) — what ``skopeo inspect`` shows as ``Digest``;
* for an OCI image layout (directory or tar): the digest of the image manifest chosen from
  its ``index.json``.

A ``docker save`` archive has no manifest of its own (the packager makes one up), so a
Signature given for one is refused: sign an OCI layout or a registry image instead.

Without a Signature input, an ``oci://`` image whose ExecEnv has signers or requires
signatures is looked up by the common convention: the tag ``sha256-<hex>.sig`` of the same
repository. That tag must name an image manifest whose single layer is the detached CMS
signature (DER or PEM, as ``openssl cms -sign -binary -outform DER`` writes it; its media
type is not relied on, e.g. ``application/pkcs7-signature``) over the digest text above;
the config may be anything (e.g. the OCI empty descriptor). A tag in cosign's own format
(its layers typed ``application/vnd.dev.cosign.simplesigning.v1+json``) is a signature this
device cannot verify: the image counts as unsigned (a warning is logged), so it installs
unless the ExecEnv requires signatures. A 404 for the tag means unsigned; any other tag
content that does not verify refuses the DU (7036). All of this happens after the
manifest is read and before any layer is fetched.
"""

from __future__ import annotations

import hashlib
import logging

from dsm_tr181.errors import Fault
from dsm_tr181.lcm.ports import PackageSource
from dsm_tr181.packagers import signature
from dsm_tr181.packagers.fetch import FetchOptions
from dsm_tr181.packagers.imagemanifest import descriptor, load_json
from dsm_tr181.packagers.imagesources import DockerArchiveSource, ImageSource, RegistrySource
from dsm_tr181.packagers.signature import bad

log = logging.getLogger(__name__)
COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN = b"cosign"  # what _stored returns for a cosign-format tag (compared by identity)


def check(source: PackageSource, image: ImageSource, top_hex: str, manifest_hex: str, options: FetchOptions) -> str:
    """Verify the image's signature; the signer's Subject, or "" for an unsigned image the policy allows."""
    # cryptography and asn1crypto (~15 MiB of RSS) load with the first image install, not at start-up.
    from dsm_tr181.signing.images import signature_tag, verify_prepared
    from dsm_tr181.signing.verify import prepare

    if source.signature:
        if isinstance(image, DockerArchiveSource):
            raise bad(f"{image.label}: a docker save archive has no manifest digest to sign; sign an OCI layout")
        digest = "sha256:" + (top_hex if isinstance(image, RegistrySource) else manifest_hex)
        blob = signature.read(source, options)
        origin = "the Signature input"
    elif isinstance(image, RegistrySource) and (source.signers or source.require_signature):
        digest = "sha256:" + top_hex
        tag = signature_tag(digest)
        stored = _stored(image, tag, options.max_signature_bytes)
        if stored is None or stored is COSIGN:
            why = f"{tag} holds a cosign signature, not a CMS one" if stored is COSIGN else f"no {tag} in the registry"
            if source.require_signature:
                raise bad(f"{image.label}: signed images are required: no Signature given and {why}")
            if stored is COSIGN:
                log.warning("%s: %s: installed as unsigned", image.label, why)
            return ""
        blob = stored
        origin = f"tag {tag}"
    elif source.require_signature:
        raise bad(f"{image.label}: signed images are required and no Signature was given")
    else:
        return ""
    try:
        verified = verify_prepared(digest, prepare(blob, source.signers))
    except Fault as fault:
        raise bad(f"{image.label}: signature from {origin} over {digest}: {fault.message}") from None
    log.info("%s: %s verified, signed by %s", image.label, origin, verified.signer)
    return verified.signer


def _stored(image: RegistrySource, tag: str, limit: int) -> bytes | None:
    """The CMS signature the ``tag`` image holds as its single layer; None when the tag does not
    exist; COSIGN when it holds cosign signatures."""
    found = image.registry.manifest_if_any(tag)
    if found is None:
        return None
    where = f"{image.label}: {tag}"
    layers = load_json(found[0], "signature manifest", where).get("layers")
    if (
        isinstance(layers, list)
        and layers
        and all(isinstance(layer, dict) and layer.get("mediaType") == COSIGN_LAYER for layer in layers)
    ):
        return COSIGN
    if not isinstance(layers, list) or len(layers) != 1:
        raise bad(f"{where}: a signature image has exactly one layer (the CMS signature)")
    blob = descriptor(layers[0], where)
    if blob.size > limit:
        raise bad(f"{where}: a signature of {blob.size} bytes is larger than {limit} bytes")
    with image.blob(blob.hex) as stream:
        data = stream.read(limit + 1)
    if len(data) != blob.size or hashlib.sha256(data).hexdigest() != blob.hex:
        raise bad(f"{where}: the signature layer does not match its descriptor {blob.digest}")
    return bytes(data)
