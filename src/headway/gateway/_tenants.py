"""Tenants: who is calling (API key -> tenant) and what they may spend (quotas, concurrency).

Authentication guarantees:
- Keys are held only as SHA-256 digests (configs carry ``sha256`` hex; :func:`hash_api_key`
  turns a plaintext key into one at load time). Nothing derived from a presented key outlives
  the call.
- Lookup is constant-time with respect to the key's value, enough to give a timing attacker
  nothing: the presented key is hashed (SHA-256 takes the same time for any value of a given
  length), and only its *digest* meets secret-dependent code: a dict lookup by digest, confirmed
  with :func:`hmac.compare_digest`. The dict's hashing and the short-circuiting ``==`` it uses
  on a bucket hit can at most reveal, through timing, how a digest the attacker caused compares
  with stored digests; turning that into a key needs a SHA-256 preimage, which is infeasible. The
  final ``compare_digest`` makes the accepting comparison itself constant-time.

Quota guarantees (:class:`TenantGuards`): per tenant, a requests-per-minute and a
tokens-per-minute GCRA limit (:class:`~headway.guard.RateLimiter`, period 60 s, burst one
minute's worth, keys ``rpm:<tenant>`` and ``tpm:<tenant>`` in ONE shared store, so several
gateway instances sharing Redis enforce one quota) and a per-instance concurrency cap. Tokens
are charged on the estimate up front (prompt estimate + ``max_tokens``, or + a default when the
request sets none) and corrected from the response's ``usage`` when it settles. A refused
request costs nothing: every charge taken before the refusal is given back.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, cast

from headway.core import NO_HOOKS, REAL_CLOCK, Clock, Hooks, Priority, RateLimited, chained
from headway.guard import RateLimiter
from headway.store import LimitStore, MemoryStore, SyncLimitStore

from ._errors import AuthError, ModelNotAllowed

__all__ = [
    "ALL_MODELS",
    "Admission",
    "AllModels",
    "Tenant",
    "TenantDirectory",
    "TenantGuards",
    "hash_api_key",
]


class AllModels:
    """The "every model" allowance: contains any model name."""

    def __contains__(self, model: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL_MODELS"


ALL_MODELS: Final = AllModels()


@dataclass(frozen=True)
class Tenant:
    """A caller the gateway knows, with its priority and limits (None = unlimited)."""

    name: str
    priority: Priority = Priority.DEFAULT
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    allowed_models: frozenset[str] | AllModels = ALL_MODELS


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode()).hexdigest()


# -- authentication --------------------------------------------------------------------------------

_BEARER: Final = b"bearer "
# A key is visible ASCII (RFC 9110 token68-ish); 512 bytes is far above any real key (OpenAI's
# are ~160) and bounds the hashing work an attacker can ask for.
_MAX_KEY_BYTES: Final = 512


class TenantDirectory:
    """API key -> tenant, holding only key digests (see the module docstring)."""

    def __init__(self, tenants: Iterable[tuple[Tenant, Iterable[str]]]) -> None:
        by_digest: dict[bytes, tuple[bytes, Tenant]] = {}
        names: dict[str, Tenant] = {}
        for tenant, key_hashes in tenants:
            if tenant.name in names:
                raise ValueError(f"duplicate tenant {tenant.name!r}")
            names[tenant.name] = tenant
            for key_hash in key_hashes:
                digest = _parse_digest(key_hash, tenant.name)
                other = by_digest.get(digest)
                if other is not None:
                    raise ValueError(
                        f"tenants {other[1].name!r} and {tenant.name!r} share an API key hash"
                    )
                by_digest[digest] = (digest, tenant)
        self._by_digest = by_digest
        #: Tenants by name.
        self.tenants: Mapping[str, Tenant] = names

    def authenticate(self, authorization: bytes | None) -> Tenant:
        """The tenant owning the ``Authorization: Bearer <key>`` key, or :class:`AuthError`."""
        if authorization is None:
            raise AuthError(
                "missing API key: send 'Authorization: Bearer <key>'", reason="missing_api_key"
            )
        # The exact spelling first: a bytes prefix test, where lower() makes a copy.
        if not authorization.startswith(b"Bearer ") and authorization[:7].lower() != _BEARER:
            raise AuthError(
                "malformed Authorization header: expected 'Bearer <key>'",
                reason="malformed_api_key",
            )
        return self._lookup(authorization[7:])

    def authenticate_headers(self, headers: Mapping[bytes, bytes]) -> Tenant:
        """Like :meth:`authenticate` on a request's (lower-cased) headers; also accepts the key
        alone in ``api-key`` (Azure OpenAI style) or ``x-api-key`` (Anthropic style)."""
        authorization = headers.get(b"authorization")
        if authorization is not None:
            return self.authenticate(authorization)
        key = headers.get(b"api-key")
        if key is None:
            key = headers.get(b"x-api-key")
        if key is None:
            return self.authenticate(None)
        return self._lookup(key)

    def _lookup(self, key: bytes) -> Tenant:
        key = key.strip(b" \t")
        if not key or len(key) > _MAX_KEY_BYTES:
            raise AuthError("malformed API key", reason="malformed_api_key")
        digest = hashlib.sha256(key).digest()
        entry = self._by_digest.get(digest)
        # Acceptance is decided by compare_digest against the *stored* digest; a miss compares
        # against a dummy so both paths do the same work.
        if entry is None:
            # Only a key nobody holds is checked for characters a key may not contain: a key
            # whose digest is configured is, by definition, a key (the check costs ~0.15 us).
            if key.translate(None, _VISIBLE_ASCII):
                raise AuthError("malformed API key", reason="malformed_api_key")
            hmac.compare_digest(_DUMMY_DIGEST, digest)
            raise AuthError("invalid API key", reason="invalid_api_key")
        if not hmac.compare_digest(entry[0], digest):
            raise AuthError("invalid API key", reason="invalid_api_key")
        return entry[1]

    def __repr__(self) -> str:
        return f"TenantDirectory({len(self.tenants)} tenants, {len(self._by_digest)} keys)"


_DUMMY_DIGEST: Final = bytes(32)
# Printable ASCII without space (0x21..0x7e): what a key may contain.
_VISIBLE_ASCII: Final = bytes(range(0x21, 0x7F))


def _parse_digest(key_hash: str, tenant: str) -> bytes:
    text = key_hash.strip().lower()
    if text.startswith("sha256:"):
        text = text[7:]
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(
            f"tenant {tenant!r}: API key hash must be 64 hex digits (sha256), got {len(text)} chars"
        )
    return digest


# -- quotas ----------------------------------------------------------------------------------------

# Completion tokens charged up front when a request sets no max_tokens. Our choice: a typical
# chat answer; the charge is corrected from `usage` afterwards, so this only shapes bursts.
DEFAULT_COMPLETION_TOKENS: Final = 256
# Retry hint for the concurrency cap, which cannot know when a slot frees. Our choice: 1 s, the
# smallest whole Retry-After.
CONCURRENCY_RETRY_AFTER: Final = 1.0
# OpenAI's quotas are per minute (RPM/TPM).
_MINUTE: Final = 60.0


class _TenantState:
    """One tenant's limiters and in-flight count."""

    def __init__(self, tenant: Tenant, store: LimitStore, hooks: Hooks, clock: Clock) -> None:
        self.name = tenant.name
        self.rpm_key = "rpm:" + tenant.name
        self.tpm_key = "tpm:" + tenant.name
        self.inflight = 0
        self.max_concurrency = tenant.max_concurrency
        self.rpm = _per_minute(tenant.rpm, "rpm:", tenant.name, store, hooks, clock)
        self.tpm = _per_minute(tenant.tpm, "tpm:", tenant.name, store, hooks, clock)


def _per_minute(
    limit: int | None, namespace: str, tenant: str, store: LimitStore, hooks: Hooks, clock: Clock
) -> RateLimiter | None:
    """A per-minute quota for one tenant in the shared store (``None``: unlimited); the
    namespace keeps the request and token quotas of one tenant apart in that store."""
    if limit is None:
        return None
    return RateLimiter(
        limit,
        _MINUTE,
        store=store,
        key=tenant,
        namespace=namespace,
        name=namespace + tenant,
        hooks=hooks,
        clock=clock,
    )


class Admission:
    """One admitted request's claim on its tenant's quotas; settle or release it exactly once
    (later calls do nothing)."""

    def __init__(self, state: _TenantState, estimated_tokens: int) -> None:
        self._state = state
        self.estimated_tokens = estimated_tokens
        self.done = False

    async def settle(self, total_tokens: int | None) -> None:
        """The request finished: free its concurrency slot and correct the token charge by
        ``total_tokens - estimate`` (``None``: usage unknown, the estimate stands)."""
        delta = self._close(total_tokens)
        if delta:
            await self._state.tpm.adjust(self._state.name, delta)  # type: ignore[union-attr]

    def settle_nowait(self, total_tokens: int | None) -> None:
        """:meth:`settle` as a plain call (no coroutine frame on the hot path); only for
        admissions from a :class:`TenantGuards` whose ``sync`` is True."""
        delta = self._close(total_tokens)
        if delta:
            self._state.tpm.adjust_nowait(self._state.name, delta)  # type: ignore[union-attr]

    def _close(self, total_tokens: int | None) -> float:
        """Mark settled and free the slot (before any await, so cancellation cannot leak it);
        the token correction still to apply, 0 when there is none."""
        if self.done:
            return 0.0
        self.done = True
        state = self._state
        state.inflight -= 1
        if state.tpm is None or total_tokens is None:
            return 0.0
        return float(total_tokens - self.estimated_tokens)

    @property
    def counts_tokens(self) -> bool:
        """Whether :meth:`settle`'s ``total_tokens`` matters (the tenant has a TPM quota); when
        not, callers may skip finding the usage in the response."""
        return self._state.tpm is not None

    async def release(self) -> None:
        """The request failed without producing tokens (upstream error before any output):
        free the slot and refund the token estimate. The request itself stays counted against
        the RPM quota, since it did reach the upstream (as OpenAI counts failed requests)."""
        refund = self._refund()
        if refund:
            await self._state.tpm.adjust(self._state.name, refund)  # type: ignore[union-attr]

    def release_nowait(self) -> None:
        """:meth:`release` as a plain call; like :meth:`settle_nowait`, in-process stores only."""
        refund = self._refund()
        if refund:
            self._state.tpm.adjust_nowait(self._state.name, refund)  # type: ignore[union-attr]

    def _refund(self) -> float:
        """Mark released and free the slot; the token refund still to apply (0: none)."""
        if self.done:
            return 0.0
        self.done = True
        state = self._state
        state.inflight -= 1
        if state.tpm is None or not self.estimated_tokens:
            return 0.0
        return -float(self.estimated_tokens)


class TenantGuards:
    """Per-tenant RPM, TPM and concurrency admission over one shared limit store.

    A tenant's limits are read the first time its name is seen. On a config reload, build a new
    ``TenantGuards`` over the *same* store: quota state carries over (it lives in the store),
    and admissions still in flight release into the object that admitted them.
    """

    kind = "tenant_quota"

    def __init__(
        self,
        tenants: Iterable[Tenant] = (),
        store: LimitStore | None = None,
        *,
        default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
        name: str = "tenants",
        hooks: Hooks = NO_HOOKS,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self._store: LimitStore = MemoryStore(clock=clock) if store is None else store
        self._sync = self._store.sync
        self._sync_store = cast(SyncLimitStore, self._store) if self._store.sync else None
        self._hooks = hooks
        self._clock = clock
        self.default_completion_tokens = default_completion_tokens
        self.name = name
        self.rejected = 0
        self._states: dict[str, _TenantState] = {}
        for tenant in tenants:
            self._state(tenant)

    @property
    def sync(self) -> bool:
        """The store is in-process: :meth:`admit_nowait` and :meth:`Admission.settle_nowait`
        work, sparing the request path their coroutine frames."""
        return self._sync

    def _state(self, tenant: Tenant) -> _TenantState:
        state = self._states.get(tenant.name)
        if state is None:
            state = self._states[tenant.name] = _TenantState(
                tenant, self._store, self._hooks, self._clock
            )
        return state

    @staticmethod
    def check_model(tenant: Tenant, model: str) -> None:
        """Raise :class:`ModelNotAllowed` unless the tenant may use ``model``."""
        if model not in tenant.allowed_models:
            raise ModelNotAllowed(f"this API key may not use model {model!r}")

    def estimate_tokens(self, prompt_tokens: int, max_tokens: int | None, n: int = 1) -> int:
        """Tokens to charge up front: the prompt plus the most the answer may use (``n``
        choices of ``max_tokens``), or the default completion size when unbounded."""
        completion = self.default_completion_tokens if max_tokens is None else max_tokens
        return prompt_tokens + completion * n

    async def admit(self, tenant: Tenant, estimated_tokens: int) -> Admission:
        """Take a concurrency slot, one request and ``estimated_tokens`` tokens, or raise
        :class:`RateLimited` (reason ``tenant_concurrency``, ``tenant_rpm``, ``tenant_tpm``,
        or ``tenant_tpm_too_large`` when the estimate exceeds the whole quota) having taken
        nothing."""
        if self._sync:
            return self.admit_nowait(tenant, estimated_tokens)
        state = self._check_concurrency(tenant)
        name = state.name
        rpm = state.rpm
        if rpm is not None:
            try:
                await rpm.acquire(name, 1.0)
            except RateLimited as exc:
                refusal = self._refuse("tenant_rpm", exc.retry_after, name)
                raise chained(refusal, None)  # noqa: B904 - is ``from None`` (mypyc drops it)
        tpm = state.tpm
        if tpm is not None and estimated_tokens > 0:
            too_large = estimated_tokens > tpm.burst
            if not too_large:
                refused: RateLimited | None = None
                try:
                    await tpm.acquire(name, float(estimated_tokens))
                except RateLimited as exc:
                    refused = exc
                if refused is not None:  # hands back the request taken above, then refuses
                    if rpm is not None:
                        await rpm.adjust(name, -1.0)
                    raise self._refuse("tenant_tpm", refused.retry_after, name)
            else:
                if rpm is not None:
                    await rpm.adjust(name, -1.0)
                raise self._refuse("tenant_tpm_too_large", None, name)
        state.inflight += 1
        return Admission(state, estimated_tokens)

    def admit_nowait(self, tenant: Tenant, estimated_tokens: int) -> Admission:
        """:meth:`admit` as a plain call (no ``await``); in-process stores only."""
        store = self._sync_store
        if store is None:
            raise TypeError("admit_nowait needs an in-process store; use 'await admit()'")
        state = self._check_concurrency(tenant)
        # The store's allocation-free step (0.0 = admitted, else seconds to wait, inf = never),
        # on keys and GCRA parameters computed once per tenant.
        now = self._clock.now()
        rpm = state.rpm
        if rpm is not None:
            wait = store.admit(state.rpm_key, rpm.emission_interval, rpm.tolerance, 1.0, now)
            if wait:
                raise self._refuse("tenant_rpm", wait, state.name)
        tpm = state.tpm
        if tpm is not None and estimated_tokens > 0:
            cost = float(estimated_tokens)
            wait = store.admit(state.tpm_key, tpm.emission_interval, tpm.tolerance, cost, now)
            if wait:
                if rpm is not None:
                    store.adjust_nowait(
                        state.rpm_key, rpm.emission_interval, rpm.tolerance, -1.0, now
                    )
                if wait == math.inf:
                    raise self._refuse("tenant_tpm_too_large", None, state.name)
                raise self._refuse("tenant_tpm", wait, state.name)
        state.inflight += 1
        return Admission(state, estimated_tokens)

    def _check_concurrency(self, tenant: Tenant) -> _TenantState:
        state = self._states.get(tenant.name)
        if state is None:
            state = self._state(tenant)
        cap = state.max_concurrency
        if cap is not None and state.inflight >= cap:
            raise self._refuse("tenant_concurrency", CONCURRENCY_RETRY_AFTER, state.name)
        return state

    def _refuse(self, reason: str, retry_after: float | None, tenant: str) -> RateLimited:
        self.rejected += 1
        self._hooks.on_event(self.kind, self.name, "rejected_" + reason, 1.0)
        return RateLimited(
            f"{reason} for tenant {tenant!r}", retry_after=retry_after, reason=reason
        )

    def inflight(self, tenant: str) -> int:
        state = self._states.get(tenant)
        return 0 if state is None else state.inflight

    def used(self, tenant: str) -> tuple[float | None, float | None]:
        """How much of ``tenant``'s RPM and TPM quotas is in use now, for the admin API: the
        GCRA bucket's level, ``(TAT - now) / T`` units of its burst (one minute's worth), which
        drains continuously. None for a quota the tenant does not have, or when the store is
        not in this process (reading Redis from a status page is not worth a round trip)."""
        state = self._states.get(tenant)
        store = self._store
        if state is None or not isinstance(store, MemoryStore):
            return None, None
        now = self._clock.now()

        def level(limiter: RateLimiter | None, key: str) -> float | None:
            if limiter is None:
                return None
            tat = store.tat(key)
            return 0.0 if tat is None else max(0.0, tat - now) / limiter.emission_interval

        return level(state.rpm, state.rpm_key), level(state.tpm, state.tpm_key)

    def snapshot(self) -> dict[str, float]:
        return {
            "tenants": len(self._states),
            "rejected": self.rejected,
            "inflight": sum(s.inflight for s in self._states.values()),
        }
