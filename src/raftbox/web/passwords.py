"""Passwords: argon2id hashes (argon2-cffi), computed off the event loop, never stored in clear.

- `hash_password(pw)` / `verify_password(hash, pw)`: coroutines that run argon2 in a worker
  thread, at most `ARGON2_CONCURRENT_MAX` at a time (each takes `memory_cost` KiB: 64 MiB by
  default), so a burst of sign-ins cannot exhaust memory or stall the API.
- `verify_password("", pw)` (an account without password, or no account) still spends the time
  of one verification against a dummy hash: the answer's timing does not say which emails exist.
- `password_problem(pw)`: why a password is refused (too short or too long), or None.
- `generate_password()`: what `raftbox up` gives the first account (about 100 bits, typable).

The hash is made by the member that proposes the command (`SetAuth`), never in the state
machine: apply stays cheap and deterministic.
"""

from __future__ import annotations

import asyncio
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 1024
ARGON2_CONCURRENT_MAX = 2

_hasher = PasswordHasher()  # argon2id, RFC 9106 "low memory" profile
_slots = threading.BoundedSemaphore(ARGON2_CONCURRENT_MAX)  # held in the worker threads
_dummy = _hasher.hash(secrets.token_urlsafe(16))


def password_problem(pw: str) -> str | None:
    if len(pw) < PASSWORD_MIN_CHARS:
        return f"a password has at least {PASSWORD_MIN_CHARS} characters"
    if len(pw) > PASSWORD_MAX_CHARS:
        return f"a password has at most {PASSWORD_MAX_CHARS} characters"
    if "\0" in pw or not pw.strip():
        return "a password cannot be blank or contain NUL"
    return None


def generate_password() -> str:
    words = [secrets.token_urlsafe(6).replace("-", "x").replace("_", "y") for _ in range(3)]
    return "-".join(words)


def hash_sync(pw: str) -> str:
    with _slots:
        return _hasher.hash(pw)


def verify_sync(stored: str, pw: str) -> bool:
    with _slots:
        try:
            return _hasher.verify(stored or _dummy, pw) and bool(stored)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


async def hash_password(pw: str) -> str:
    return await asyncio.to_thread(hash_sync, pw)


async def verify_password(stored: str, pw: str) -> bool:
    return await asyncio.to_thread(verify_sync, stored, pw)
