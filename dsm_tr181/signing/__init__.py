"""Signed software: detached CMS signatures over DU archives (and image manifest digests),
verified against the trust anchors an ExecEnv's ``Signers`` name.

Accepted format: one CMS (RFC 5652) SignedData, detached (no encapsulated content),
with one SignerInfo, as ``openssl cms -sign -binary -outform DER`` makes it (PEM with
``-----BEGIN CMS-----`` / ``PKCS7`` armour is accepted too), with or without signed
attributes. The format is deduced from the content, never from a Content-Type: DER when it
starts with a SEQUENCE tag, PEM when it starts with ``-----BEGIN``; anything else is a bad
signature. Signer keys: RSA (PKCS #1 v1.5 or PSS) and ECDSA. Digests: SHA-256, SHA-384,
SHA-512. Not accepted: Ed25519 signers (neither Debian 12's OpenSSL 3.0 nor
``cryptography`` writes such CMS signatures, so none could be tested) and raw signatures
without CMS (a bare ECDSA/Ed25519 signature plus a certificate).

This package needs ``cryptography`` and ``asn1crypto``; the LCM core never imports it.
"""
