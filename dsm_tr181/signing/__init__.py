"""Signed software: detached CMS signatures over DU archives (and image manifest digests),
verified against the trust anchors an ExecEnv's ``Signers`` name.

Accepted format: one CMS (RFC 5652) SignedData, detached (no encapsulated content),
with one SignerInfo, as ``openssl cms -sign -binary -outform DER`` makes it (PEM with
``-----BEGIN CMS-----`` / ``PKCS7`` armour is accepted too). The format is deduced from
the content, never from a Content-Type: DER when it starts with a SEQUENCE tag, PEM when it
starts with ``-----BEGIN``; anything else is a bad signature. Signer keys: RSA (PKCS #1
v1.5 or PSS), ECDSA, Ed25519 (Ed25519 only with signed attributes: without them it would
need the whole archive in memory). Digests: SHA-256, SHA-384, SHA-512. Raw signatures
without CMS (a bare ECDSA/Ed25519 signature plus a certificate) are not accepted.

This package needs ``cryptography`` and ``asn1crypto``; the LCM core never imports it.
"""
