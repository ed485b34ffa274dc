"""Guard: no unkeyed hash of a plate anywhere in alprd/ (a GPU enumerates every 7-character plate
through SHA-256 in seconds, so a hashed plate is a plate).

Every use of a hash primitive in alprd/ must be listed below with what it hashes. A new one fails
this test until someone has looked at it: a keyed HMAC of a plate (privacy.summaries.Summarizer tokens) is
fine, anything unkeyed over plate text is not. The hot list's in-RAM index (`hotlist.index._word_key`, a
bijective mix of the folded plate) is no digest: it lives in RAM beside the decrypted list it indexes.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[tuple[str, str, str], str] = {
    ("audit.py", "AuditEntry.digest", "hashlib.sha256"): "the previous audit entry (no plate in entries)",
    ("audit.py", "compute_mac", "hmac.new"): "HMAC keyed from the device key",
    ("audit.py", "compute_mac", "hashlib.sha256"): "digestmod of that HMAC",
    ("schema.py", "config_hash", "hashlib.sha256"): "the validated config",
    ("payloads.py", "InfoBody.of", "hashlib.sha256"): "the policy text",
    ("bundle.py", "encrypt_payload", "hashlib.sha256"): "the whole list plaintext, with a random salt",
    ("bundle.py", "verify_bundle", "hashlib.sha256"): "the same, to check it",
    ("delta.py", "content_digest", "hashlib.sha256"):
        "a whole list's entries, salted with a random salt that travels only inside the ciphertext",
    ("delta.py", "result_manifest", "hashlib.sha256"): "the whole list plaintext after a delta, salted",
    ("keys.py", "key_id", "hashlib.sha256"): "a key (public, or the list key's id)",
    ("onnx.py", "file_sha256", "hashlib.sha256"): "a model file",
    ("summaries.py", "Summarizer._token_int", "hmac.new"): "the tokens: HMAC under a RAM-only, ratcheted key",
    ("summaries.py", "Summarizer._token_int", "hashlib.sha256"): "digestmod of that HMAC",
    ("evidence.py", "recipient_id", "hashlib.sha256"): "an evidence public key",
    ("sqlite.py", "_file_sha256", "hashlib.sha256"): "a quarantined database file",
    ("manifest.py", "_sha256_file", "hashlib.sha256"): "the geofence file (places, not plates)",
}
HASH_MODULES = {"hashlib", "hmac", "zlib", "binascii", "mmh3", "xxhash", "hashes"}
HASH_NAMES = {"sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_512", "md5", "blake2b",
              "blake2s", "new", "file_digest", "pbkdf2_hmac", "scrypt", "crc32", "adler32", "crc_hqx",
              "Hash", "digest", "hash", "xxh64", "xxh3_64"}


def _uses(path: Path) -> list[tuple[str, str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str, str]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.ImportFrom) and child.module in HASH_MODULES - {"hashes"}:
                found.append((path.name, ".".join(scope), f"from {child.module} import"))
            if (isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name)
                    and child.value.id in HASH_MODULES and child.attr in HASH_NAMES):
                found.append((path.name, ".".join(scope), f"{child.value.id}.{child.attr}"))
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "hash":
                found.append((path.name, ".".join(scope), "hash()"))  # salted per process, unless it is not
            visit(child, scope)

    visit(tree, [])
    return found


def test_every_hash_in_alprd_is_listed_with_what_it_hashes() -> None:
    uses = {u for p in sorted((ROOT / "alprd").rglob("*.py")) for u in _uses(p)}
    unlisted = sorted(uses - set(ALLOWED))
    assert not unlisted, (
        "hash primitives not reviewed for plate text (add them to ALLOWED with what they hash, "
        f"if they never see a plate unkeyed): {unlisted}"
    )
    assert not sorted(set(ALLOWED) - uses), "ALLOWED lists uses that no longer exist: prune it"


def test_the_guard_sees_what_it_must(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import hashlib, zlib\nfrom hashlib import sha256\n"
        "def token(plate):\n    return hashlib.sha256(plate.encode()).hexdigest()\n"
        "class A:\n    def f(self, t):\n        return zlib.crc32(t), hash(t), hashlib.new('md5', t)\n"
    )
    assert set(_uses(probe)) == {
        ("probe.py", "", "from hashlib import"), ("probe.py", "token", "hashlib.sha256"),
        ("probe.py", "A.f", "zlib.crc32"), ("probe.py", "A.f", "hash()"), ("probe.py", "A.f", "hashlib.new"),
    }
