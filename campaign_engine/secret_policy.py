"""No placeholder runs: the secret settings a process refuses to start with.

Checked at the start of every `campaign-engine` command that reads secrets (`api`, `worker`,
`dev`, `keys …`, `suppressions …`, `patches`, `deployment …`; `entrypoints.cli.main`), which then
exits 2 with one line per refused secret naming its setting. A value is refused when it is

- **a documented placeholder**: a value of `.env.example` (`PLACEHOLDERS`), or one that reads like
  one (`change-me…`, `replace-me`, `placeholder`, `example`, `<…>`, `...`: `_PLACEHOLDER_MARKS`);
- **a known example value**: one the documentation shows (`KNOWN_EXAMPLES`: the Gmail app
  password of the IMAP example, the `user:pass` of the database URL example), or a stock password;
- for the keys the engine computes with itself (the API-key pepper, the unsubscribe key, every
  payload key: `judge_key_text`, `judge_payload_keys`), **shorter than 32 bytes of entropy**
  (`MIN_ENTROPY_BITS`, 256): `estimate_text` and `estimate_bytes` count the value's length in
  the smallest usual alphabet that holds it (hex: 4 bits a character, base64: 6, printable
  ASCII: about 6.6; a payload key's 32 bytes: 8 a byte, unless they are printable text, then as
  text); refused too is a value whose repeated or sequential stretches (`aaaa`, `abab`,
  `0123`, a word said twice) leave less than `MIN_PATTERNED_BITS`;
- for the DKIM private key, an RSA key under 1024 bits (RFC 8301 §3.2).

What the usual generators make always passes: `secrets.token_hex(32)` (64 hex digits, 256 bits,
what the engine writes into `var/` itself), `secrets.token_urlsafe(32)` (43 characters, 258),
`openssl rand -base64 32` and `base64.b64encode(os.urandom(32))` (44 characters, 258).

Passwords of services the engine logs in to (the SMTP password, an IMAP password, the password in
`CAMPAIGN_ENGINE_DATABASE_URL` or in a Redis `CAMPAIGN_ENGINE_RATE_LIMIT_STORAGE_URI`) are checked
for placeholders and examples only: their strength is the issuing service's to set (a Gmail app
password has 16 letters), and refusing it would leave the engine unable to log in at all.

Secrets the engine generated under the state dir (`api-key-pepper`, `unsubscribe-key`,
`payload-keys`) are checked the same way when the setting is unset and the file exists, since an
operator may have written one there by hand. The test suite's payload keys (`tests/keys.py`) are
public too, but not refused: the suite's own processes run with them.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from campaign_engine.settings import Settings, reveal

MIN_ENTROPY_BITS = 256
"""32 bytes: what a key of HMAC-SHA256 or AES-256 needs to be as strong as its algorithm."""

MIN_PATTERNED_BITS = 192
"""A value whose patterns (`_effective_length`) leave less than this is refused even when its
length alone would pass. Three quarters of `MIN_ENTROPY_BITS`: a random value loses at most a
few bits to chance runs (`a1b2c3` style runs of three turn up in random hex), never a quarter."""

ENV_PREFIX = "CAMPAIGN_ENGINE_"

PLACEHOLDERS: dict[str, str] = {
    "change-me-to-a-long-random-secret": "CAMPAIGN_ENGINE_API_KEY_PEPPER",
    "change-me-temporal": "POSTGRES_PASSWORD",
    "change-me-campaigns": "CAMPAIGNS_DB_PASSWORD",
    "change-me-to-another-long-random-secret": "CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY",
    "change-me:Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtISE=": "CAMPAIGN_ENGINE_PAYLOAD_KEYS",
    # The key of that entry, as a payload key ring holds it once decoded.
    "change-me-change-me-change-me-!!": "CAMPAIGN_ENGINE_PAYLOAD_KEYS",
}
"""Every value of `.env.example`, and the variable it stands in for there (tests check the file
against this list)."""

KNOWN_EXAMPLES: frozenset[str] = frozenset(
    {
        # docs/how-to/imap-mailboxes.md: the Gmail example's app password.
        "abcd efgh ijkl mnop",
        "abcdefghijklmnop",
        # docs/reference/settings.md: `postgresql+asyncpg://user:pass@host:5432/db`.
        "pass",
        "user",
        # Stock passwords of images and tutorials.
        "password",
        "postgres",
        "temporal",
        "campaigns",
        "secret",
        "admin",
        "root",
        "redis",
        "changeme",
        "letmein",
        "123456",
        "12345678",
    }
)
"""Values the documentation or common tutorials show (compared case-blind, spaces kept)."""

_PLACEHOLDER_MARKS = re.compile(
    r"change[-_ ]?me|replace[-_ ]?me|placeholder|example|your[-_ ]?(own[-_ ]?)?"
    r"(secret|key|password|pepper|token)|<[a-z _-]+>|\.\.\.|…",
    re.IGNORECASE,
)
"""What placeholders read like. A random value of the usual generators holds none of these
(`example`, seven fixed letters, turns up in one base64 value of about 10^11)."""

GENERATE_TEXT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
GENERATE_PAYLOAD_KEY = (
    "python3 -c 'import base64,os; print(\"k1:\" + base64.b64encode(os.urandom(32)).decode())'"
)


@dataclass(frozen=True)
class Refusal:
    """One refused secret: `source` names it (an environment variable, `…IMAP.PASSWORD` of a
    mailbox, or a file under the state dir), `reason` says why, `remedy` what to do."""

    source: str
    reason: str
    remedy: str = ""

    def line(self) -> str:
        """The one line `campaign-engine` prints for it (never the value)."""
        return f"{self.source} {self.reason}" + (f"; {self.remedy}" if self.remedy else "")


class WeakSecrets(Exception):
    """Raised by `enforce`: one or more secrets are refused (`refusals`, in settings order)."""

    def __init__(self, refusals: list[Refusal]) -> None:
        super().__init__("\n".join(refusal.line() for refusal in refusals))
        self.refusals = refusals


# --- estimating ---------------------------------------------------------------------------------

_ALPHABETS: tuple[tuple[int, re.Pattern[str]], ...] = (
    (10, re.compile(r"[0-9]+")),
    (16, re.compile(r"[0-9a-f]+|[0-9A-F]+")),
    # One-case letters and digits with word separators: passphrases such as `my long-pepper`.
    (40, re.compile(r"[a-z0-9 ._-]+|[A-Z0-9 ._-]+")),
    # base64 and base64url (padding stripped before counting).
    (64, re.compile(r"[A-Za-z0-9+/_-]+")),
    (95, re.compile(r"[\x20-\x7e]+")),
)
_PRINTABLE_ALPHABET = 95


def alphabet_size(text: str) -> int:
    """The size of the smallest usual alphabet that holds every character of `text` (10 digits,
    16 hex, 40 one-case words, 64 base64, 95 printable ASCII); 95 for text with other
    characters, each of which then counts as one printable character (generous, never low)."""
    for size, pattern in _ALPHABETS:
        if pattern.fullmatch(text):
            return size
    return _PRINTABLE_ALPHABET


def _run_length(symbols: str, start: int) -> int:
    """How long the arithmetic run from `start` is, with a step of -1, 0 or +1 (`aaa`, `abc`,
    `321`); 1 when there is none."""
    if start + 1 >= len(symbols):
        return 1
    step = ord(symbols[start + 1]) - ord(symbols[start])
    if step not in (-1, 0, 1):
        return 1
    end = start + 1
    while end + 1 < len(symbols) and ord(symbols[end + 1]) - ord(symbols[end]) == step:
        end += 1
    return end - start + 1


def _repeat_length(symbols: str, start: int) -> int:
    """The longest prefix of `symbols[start:]` that already began before `start` (it may run into
    itself, as LZ77's matches do: `abababab`); 0 when none of at least one symbol."""
    length = 0
    while start + length < len(symbols) and (
        symbols.find(symbols[start : start + length + 1], 0, start + length) != -1
    ):
        length += 1
    return length


def _effective_length(symbols: str) -> int:
    """The number of symbols once every run (`_run_length`) or repeat (`_repeat_length`) of three
    or more counts as one: what a guesser who tries patterns first has to guess."""
    count, position = 0, 0
    while position < len(symbols):
        stretch = max(_run_length(symbols, position), _repeat_length(symbols, position))
        position += stretch if stretch >= 3 else 1
        count += 1
    return count


@dataclass(frozen=True)
class Estimate:
    """`bits`: length times bits per symbol; `patterned_bits`: the same over the effective length
    (`_effective_length`); `alphabet`: the symbols per position assumed."""

    bits: float
    patterned_bits: float
    alphabet: int

    @property
    def too_weak(self) -> bool:
        """Below `MIN_ENTROPY_BITS`, or below `MIN_PATTERNED_BITS` once its patterns count."""
        return self.bits < MIN_ENTROPY_BITS or self.patterned_bits < MIN_PATTERNED_BITS


def estimate_text(text: str) -> Estimate:
    """The entropy estimate of a secret given as text (its trailing base64 padding ignored)."""
    core = text.rstrip("=") or text
    alphabet = alphabet_size(core)
    per_symbol = math.log2(alphabet)
    # Long values: patterns are looked for in the first 512 symbols (quadratic search); the
    # rest counts at full weight.
    head = core[:512]
    effective = _effective_length(head) + len(core) - len(head)
    return Estimate(len(core) * per_symbol, effective * per_symbol, alphabet)


def estimate_bytes(secret: bytes) -> Estimate:
    """The entropy estimate of raw key bytes: 8 bits a byte, unless they are all printable ASCII
    (a passphrase base64-encoded to pass for a key), which count as that text."""
    if all(0x20 <= byte <= 0x7E for byte in secret):
        return estimate_text(secret.decode("ascii"))
    symbols = secret.decode("latin-1")
    return Estimate(len(secret) * 8.0, _effective_length(symbols) * 8.0, 256)


def estimate_bits(text: str) -> float:
    """The entropy `estimate_text` gives `text`, in bits, patterns counted (the lower of the two
    estimates)."""
    estimate = estimate_text(text)
    return min(estimate.bits, estimate.patterned_bits)


# --- judging ------------------------------------------------------------------------------------


def _placeholder_reason(value: str) -> str | None:
    if value in PLACEHOLDERS:
        return "is a placeholder copied from .env.example"
    if _PLACEHOLDER_MARKS.search(value):
        return "is a placeholder (it reads like one: change-me, example, <…>, ...)"
    if value.strip().lower() in KNOWN_EXAMPLES:
        return "is a known example value (from the documentation or a tutorial)"
    return None


def _weak_reason(estimate: Estimate) -> str:
    bits = min(estimate.bits, estimate.patterned_bits)
    patterned = estimate.bits >= MIN_ENTROPY_BITS
    return (
        f"is shorter than 32 bytes of entropy (about {bits:.0f} bits"
        + (", its repeats and runs counted once" if patterned else "")
        + f"; at least {MIN_ENTROPY_BITS} needed)"
    )


def judge_key_text(value: str) -> str | None:
    """Why a key given as text (pepper, unsubscribe key) is refused, or None when it is not."""
    reason = _placeholder_reason(value)
    if reason is not None:
        return reason
    estimate = estimate_text(value)
    return _weak_reason(estimate) if estimate.too_weak else None


def judge_credential(value: str) -> str | None:
    """Why a password of another service is refused (placeholders and examples only), or None."""
    return _placeholder_reason(value)


def judge_payload_keys(text: str) -> Iterator[str]:
    """Why each entry of a payload key ring is refused (nothing for a good ring). A ring that
    does not parse yields the parse error."""
    # Imported here: the codec module imports the settings module, as this one does.
    from campaign_engine.codec import KeyRingError, parse_key_ring

    whole = _placeholder_reason(text.strip())
    if whole is not None:
        yield whole
        return
    try:
        ring = parse_key_ring(text)
    except KeyRingError as error:
        yield f"does not parse: {error}"
        return
    for key in ring.keys:
        # A placeholder only reads like one when the key's bytes are text.
        decoded = key.secret.decode("latin-1")
        is_text = decoded.isascii() and decoded.isprintable()
        reason = _placeholder_reason(decoded) if is_text else None
        if reason is None:
            estimate = estimate_bytes(key.secret)
            reason = _weak_reason(estimate) if estimate.too_weak else None
        if reason is not None:
            yield f"key {key.id!r} {reason}"


def url_password(url: str) -> str | None:
    """The password in a URL's user information (`scheme://user:password@host`), percent-decoded;
    None when there is none."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError:
        return "\x00"  # not text: certainly no key written by the engine; judged as such


def refusals(settings: Settings) -> list[Refusal]:
    """Every refused secret of `settings` (and of the secret files under its state dir that
    stand in for unset settings), in settings order; empty when all may run."""
    from campaign_engine.codec import KEY_FILE
    from campaign_engine.keys import PEPPER_FILE
    from campaign_engine.unsubscribe import UNSUBSCRIBE_KEY_FILE

    found: list[Refusal] = []
    state_dir = Path(settings.state_dir)

    for field, file_name in (
        ("api_key_pepper", PEPPER_FILE),
        ("unsubscribe_key", UNSUBSCRIBE_KEY_FILE),
    ):
        variable = ENV_PREFIX + field.upper()
        value = reveal(getattr(settings, field))
        source, text = (variable, value) if value else (str(state_dir / file_name), None)
        if not value:
            text = _read(state_dir / file_name)
        if text is not None:
            reason = judge_key_text(text)
            if reason is not None:
                found.append(Refusal(source, reason, f"generate one: {GENERATE_TEXT}"))

    ring_text = reveal(settings.payload_keys)
    ring_source = ENV_PREFIX + "PAYLOAD_KEYS"
    if not ring_text:
        ring_source, ring_text = str(state_dir / KEY_FILE), _read(state_dir / KEY_FILE)
    if ring_text is not None:
        for reason in judge_payload_keys(ring_text):
            found.append(Refusal(ring_source, reason, f"generate one: {GENERATE_PAYLOAD_KEY}"))

    for variable, url in (
        (ENV_PREFIX + "DATABASE_URL", reveal(settings.database_url)),
        (ENV_PREFIX + "RATE_LIMIT_STORAGE_URI", reveal(settings.rate_limit_storage_uri)),
    ):
        password = url_password(url) if url else None
        reason = judge_credential(password) if password else None
        if reason is not None:
            found.append(Refusal(variable, f"holds a password that {reason}", "set a real one"))

    smtp_password = reveal(settings.smtp_password)
    if smtp_password:
        reason = judge_credential(smtp_password)
        if reason is not None:
            found.append(Refusal(ENV_PREFIX + "SMTP_PASSWORD", reason, "set the real one"))

    for address, limits in settings.mailboxes.items():
        imap_password = reveal(limits.imap.password) if limits.imap else None
        reason = judge_credential(imap_password) if imap_password else None
        if reason is not None:
            source = f"{ENV_PREFIX}MAILBOXES {address!r} imap.password"
            found.append(Refusal(source, reason, "set the real one"))

    found.extend(_dkim_refusals(settings))
    return found


DKIM_MIN_RSA_BITS = 1024
"""RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits."""


def _dkim_refusals(settings: Settings) -> list[Refusal]:
    path = settings.dkim_private_key_path
    if path is None or not (settings.dkim_selector and settings.dkim_domain):
        return []
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    variable = ENV_PREFIX + "DKIM_PRIVATE_KEY_PATH"
    try:
        key = load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError, binascii.Error):
        # Missing or unreadable: the worker says so when it loads the key; nothing to judge.
        return []
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < DKIM_MIN_RSA_BITS:
        return [
            Refusal(
                variable,
                f"names an RSA key of {key.key_size} bits (RFC 8301: at least {DKIM_MIN_RSA_BITS})",
                "make one with `campaign-engine dkim init`",
            )
        ]
    return []


def enforce(settings: Settings) -> None:
    """Raises `WeakSecrets` when `refusals(settings)` finds any."""
    found = refusals(settings)
    if found:
        raise WeakSecrets(found)


__all__ = [
    "KNOWN_EXAMPLES",
    "MIN_ENTROPY_BITS",
    "PLACEHOLDERS",
    "Estimate",
    "Refusal",
    "WeakSecrets",
    "enforce",
    "estimate_bits",
    "estimate_bytes",
    "estimate_text",
    "judge_credential",
    "judge_key_text",
    "judge_payload_keys",
    "refusals",
    "url_password",
]
