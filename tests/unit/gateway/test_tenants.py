"""Tenants: authentication by hashed key, and RPM/TPM/concurrency admission, exactly."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math

import pytest

from headway.core import ManualClock, Priority, RateLimited, RecordingHooks
from headway.gateway._errors import AuthError, ModelNotAllowed
from headway.gateway._tenants import (
    ALL_MODELS,
    Tenant,
    TenantDirectory,
    TenantGuards,
    hash_api_key,
)
from headway.store import Decision, MemoryStore

FREE = Tenant("demo-free", Priority.SHEDDABLE, rpm=3, tpm=600, max_concurrency=2)
PRO = Tenant("demo-pro", Priority.CRITICAL, allowed_models=frozenset({"sim-large"}))
FREE_KEY = "sk-demo-free"
PRO_KEYS = ("sk-demo-pro", "sk-demo-pro-2")


@pytest.fixture
def directory() -> TenantDirectory:
    return TenantDirectory(
        [
            (FREE, [hash_api_key(FREE_KEY)]),
            (PRO, [hash_api_key(k) for k in PRO_KEYS]),
        ]
    )


# -- authentication --------------------------------------------------------------------------------


def test_hash_is_sha256_hex() -> None:
    assert hash_api_key("sk-x") == hashlib.sha256(b"sk-x").hexdigest()


def test_valid_keys_map_to_their_tenant(directory: TenantDirectory) -> None:
    assert directory.authenticate(b"Bearer sk-demo-free") is FREE
    assert directory.authenticate(b"Bearer sk-demo-pro") is PRO
    assert directory.authenticate(b"Bearer sk-demo-pro-2") is PRO
    # The scheme is case-insensitive (RFC 9110 11.1); surrounding blanks are ignored.
    assert directory.authenticate(b"bearer sk-demo-free") is FREE
    assert directory.authenticate(b"BEARER   sk-demo-free  ") is FREE


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_api_key"),
        (b"Bearer sk-unknown", "invalid_api_key"),
        (b"Bearer sk-demo-fre", "invalid_api_key"),
        (b"Bearer sk-demo-free2", "invalid_api_key"),
        (b"Bearer ", "malformed_api_key"),
        (b"Bearer", "malformed_api_key"),
        (b"", "malformed_api_key"),
        (b"sk-demo-free", "malformed_api_key"),
        (b"Basic c2stZGVtby1mcmVlOg==", "malformed_api_key"),
        (b"Token sk-demo-free", "malformed_api_key"),
        (b"Bearer sk-demo free", "malformed_api_key"),
        (b"Bearer sk-demo-free\x00", "malformed_api_key"),
        (b"Bearer sk-\xc3\xa9", "malformed_api_key"),
        (b"Bearer " + b"k" * 513, "malformed_api_key"),
    ],
)
def test_refused_keys(directory: TenantDirectory, header: bytes | None, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        directory.authenticate(header)
    assert info.value.reason == reason
    assert info.value.status == 401


def test_other_header_variants(directory: TenantDirectory) -> None:
    assert directory.authenticate_headers({b"authorization": b"Bearer sk-demo-pro"}) is PRO
    assert directory.authenticate_headers({b"api-key": b"sk-demo-pro"}) is PRO
    assert directory.authenticate_headers({b"x-api-key": b"sk-demo-free"}) is FREE
    # Authorization wins when several are sent.
    headers = {b"authorization": b"Bearer sk-demo-pro", b"x-api-key": b"sk-demo-free"}
    assert directory.authenticate_headers(headers) is PRO
    with pytest.raises(AuthError) as info:
        directory.authenticate_headers({b"content-type": b"application/json"})
    assert info.value.reason == "missing_api_key"
    with pytest.raises(AuthError):
        directory.authenticate_headers({b"x-api-key": b"sk-nope"})


def _everything_reachable(obj: object, seen: set[int] | None = None) -> list[object]:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    found = [obj]
    children: list[object] = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    elif type(obj).__module__.startswith("headway."):
        # Headway's objects keep their fields in the instance dict or behind data descriptors
        # on the class: __slots__ members, and the attributes of a class compiled by mypyc
        # (headway._native).
        for cls in type(obj).__mro__:
            for name, attr in vars(cls).items():
                if inspect.isgetsetdescriptor(attr) or inspect.ismemberdescriptor(attr):
                    with contextlib.suppress(AttributeError):
                        children.append(getattr(obj, name))
    elif hasattr(obj, "__dict__"):
        children.extend(vars(obj).values())
    for child in children:
        found.extend(_everything_reachable(child, seen))
    return found


def test_keys_are_never_held_in_plaintext(directory: TenantDirectory) -> None:
    directory.authenticate(b"Bearer sk-demo-pro")  # a lookup leaves nothing behind either
    with pytest.raises(AuthError):
        directory.authenticate(b"Bearer sk-not-a-key")
    values = _everything_reachable(directory)
    assert len(values) > 5  # the walk really visited the directory's state
    for value in values:
        if isinstance(value, str | bytes):
            text = value if isinstance(value, bytes) else value.encode()
            for key in (FREE_KEY, *PRO_KEYS, "sk-not-a-key"):
                assert key.encode() not in text
    digests = [v for v in values if isinstance(v, bytes) and len(v) == 32]
    assert hashlib.sha256(FREE_KEY.encode()).digest() in digests
    assert "sk-demo" not in repr(directory)


def test_directory_accepts_prefixed_and_uppercase_hashes() -> None:
    digest = hash_api_key("sk-a")
    directory = TenantDirectory([(FREE, ["sha256:" + digest.upper()])])
    assert directory.authenticate(b"Bearer sk-a") is FREE


@pytest.mark.parametrize("bad", ["sk-plaintext", "abc", "0" * 63, "g" * 64])
def test_directory_rejects_non_digests(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        TenantDirectory([(FREE, [bad])])


def test_directory_rejects_shared_keys_and_duplicate_tenants() -> None:
    digest = hash_api_key("sk-a")
    with pytest.raises(ValueError, match="share an API key"):
        TenantDirectory([(FREE, [digest]), (PRO, [digest])])
    with pytest.raises(ValueError, match="duplicate tenant"):
        TenantDirectory([(FREE, []), (FREE, [])])


def test_tenant_is_frozen_and_defaults_to_all_models() -> None:
    tenant = Tenant("t")
    assert tenant.allowed_models is ALL_MODELS
    assert "anything" in tenant.allowed_models
    with pytest.raises(AttributeError):
        tenant.rpm = 5  # type: ignore[misc]


def test_check_model() -> None:
    TenantGuards.check_model(PRO, "sim-large")
    TenantGuards.check_model(FREE, "sim-large")
    with pytest.raises(ModelNotAllowed) as info:
        TenantGuards.check_model(PRO, "sim-small")
    assert info.value.status == 403


# -- admission ------------------------------------------------------------------------------------


def guards(
    clock: ManualClock, *tenants: Tenant, hooks: RecordingHooks | None = None
) -> TenantGuards:
    store = MemoryStore(clock=clock)
    if hooks is None:
        return TenantGuards(tenants, store, clock=clock)
    return TenantGuards(tenants, store, clock=clock, hooks=hooks)


async def test_rpm_admits_burst_then_refuses_with_exact_retry_after(clock: ManualClock) -> None:
    g = guards(clock, Tenant("t", rpm=3))
    tenant = Tenant("t", rpm=3)
    for _ in range(3):
        await g.admit(tenant, 0)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 0)
    # 3 per minute: one request every 20 s frees up.
    assert info.value.reason == "tenant_rpm"
    assert info.value.retry_after == pytest.approx(20.0)
    clock.step(19.999)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 0)
    assert info.value.retry_after == pytest.approx(0.001)
    clock.step(0.001)
    await g.admit(tenant, 0)


async def test_tpm_charges_the_estimate_up_front(clock: ManualClock) -> None:
    tenant = Tenant("t", tpm=600)
    g = guards(clock, tenant)
    await g.admit(tenant, 500)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 200)
    # 600 tokens per minute = 10/s; 100 tokens over -> 10 s.
    assert info.value.reason == "tenant_tpm"
    assert info.value.retry_after == pytest.approx(10.0)
    await g.admit(tenant, 100)


async def test_estimate_larger_than_quota_is_never_admissible(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=10, tpm=600)
    g = guards(clock, tenant)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 601)
    assert (info.value.reason, info.value.retry_after) == ("tenant_tpm_too_large", None)
    # The refused request's RPM charge was given back: still 10 in a row.
    for _ in range(10):
        await g.admit(tenant, 1)


async def test_tpm_refusal_refunds_the_request(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=2, tpm=100)
    g = guards(clock, tenant)
    await g.admit(tenant, 100)
    for _ in range(3):
        with pytest.raises(RateLimited) as info:
            await g.admit(tenant, 50)
        assert info.value.reason == "tenant_tpm"
    # None of the three refusals spent a request.
    clock.step(30.0)
    await g.admit(tenant, 50)


async def test_settle_corrects_an_overestimate(clock: ManualClock) -> None:
    tenant = Tenant("t", tpm=600)
    g = guards(clock, tenant)
    admission = await g.admit(tenant, 500)
    await admission.settle(100)  # 400 refunded: 500 of 600 free again
    await g.admit(tenant, 500)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 1)
    assert info.value.retry_after == pytest.approx(0.1)


async def test_settle_charges_an_underestimate_into_debt(clock: ManualClock) -> None:
    tenant = Tenant("t", tpm=600)
    g = guards(clock, tenant)
    admission = await g.admit(tenant, 100)
    await admission.settle(900)  # 300 over the quota: debt, waited off at 10 tokens/s
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 1)
    assert info.value.retry_after == pytest.approx(30.1)
    clock.step(30.1)
    await g.admit(tenant, 1)


async def test_settle_with_unknown_usage_keeps_the_estimate(clock: ManualClock) -> None:
    tenant = Tenant("t", tpm=600)
    g = guards(clock, tenant)
    admission = await g.admit(tenant, 600)
    await admission.settle(None)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 10)
    assert info.value.retry_after == pytest.approx(1.0)


async def test_release_refunds_tokens_but_keeps_the_request(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=1, tpm=600)
    g = guards(clock, tenant)
    admission = await g.admit(tenant, 600)
    await admission.release()
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 600)
    assert info.value.reason == "tenant_rpm"  # the request still counted...
    clock.step(60.0)
    await g.admit(tenant, 600)  # ...and the tokens came back in full


async def test_settle_and_release_are_idempotent(clock: ManualClock) -> None:
    tenant = Tenant("t", tpm=600, max_concurrency=5)
    g = guards(clock, tenant)
    admission = await g.admit(tenant, 300)
    assert g.inflight("t") == 1
    await admission.settle(100)
    await admission.settle(100)
    await admission.release()
    assert g.inflight("t") == 0
    # Only one 200-token refund happened: 100 spent, 500 free.
    await g.admit(tenant, 500)
    with pytest.raises(RateLimited):
        await g.admit(tenant, 1)


async def test_concurrency_cap(clock: ManualClock, hooks: RecordingHooks) -> None:
    tenant = Tenant("t", max_concurrency=2)
    g = guards(clock, tenant, hooks=hooks)
    first = await g.admit(tenant, 10)
    second = await g.admit(tenant, 10)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 10)
    assert info.value.reason == "tenant_concurrency"
    assert info.value.retry_after == 1.0
    await first.release()
    await first.release()  # idempotent: frees one slot, not two
    third = await g.admit(tenant, 10)
    with pytest.raises(RateLimited):
        await g.admit(tenant, 10)
    await second.settle(10)
    await third.settle(None)
    assert g.inflight("t") == 0
    assert g.snapshot()["rejected"] == 2
    events = [e for e in hooks.events if e[2].startswith("rejected_")]
    assert len(events) == 2


async def test_concurrency_refusal_takes_no_quota(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=2, max_concurrency=1)
    g = guards(clock, tenant)
    held = await g.admit(tenant, 0)
    for _ in range(5):
        with pytest.raises(RateLimited):
            await g.admit(tenant, 0)
    await held.settle(0)
    await g.admit(tenant, 0)  # the second of two RPM: refusals did not spend any


async def test_tenants_are_isolated_but_share_one_store(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    a, b = Tenant("a", rpm=1, tpm=60), Tenant("b", rpm=1, tpm=60)
    g = TenantGuards([a, b], store, clock=clock)
    await g.admit(a, 10)
    await g.admit(b, 10)
    assert store.tat("rpm:a") is not None
    assert store.tat("tpm:b") is not None
    # A second gateway instance on the same store sees the same quota.
    other = TenantGuards([a], store, clock=clock)
    with pytest.raises(RateLimited):
        await other.admit(a, 10)


async def test_unknown_tenant_is_admitted_by_its_own_limits(clock: ManualClock) -> None:
    g = guards(clock)
    tenant = Tenant("late", rpm=1)
    await g.admit(tenant, 0)
    with pytest.raises(RateLimited):
        await g.admit(tenant, 0)


async def test_unlimited_tenant_never_refused(clock: ManualClock) -> None:
    tenant = Tenant("t")
    g = guards(clock, tenant)
    admissions = [await g.admit(tenant, 10**9) for _ in range(100)]
    assert g.inflight("t") == 100
    for admission in admissions:
        await admission.settle(5)
    assert g.inflight("t") == 0


def test_estimate_tokens(clock: ManualClock) -> None:
    g = guards(clock)
    assert g.estimate_tokens(100, 50) == 150
    assert g.estimate_tokens(100, 50, n=3) == 250
    assert g.estimate_tokens(100, None) == 100 + g.default_completion_tokens == 356


async def test_admit_nowait_matches_admit(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=2, tpm=100)
    g = guards(clock, tenant)
    g.admit_nowait(tenant, 60)
    with pytest.raises(RateLimited) as info:
        g.admit_nowait(tenant, 60)
    assert info.value.retry_after == pytest.approx(12.0)
    assert not math.isinf(info.value.retry_after or 0.0)


class AsyncOnlyStore:
    """A memory store seen through the async interface only, as a Redis store is used."""

    sync = False

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.errors = 0
        self.calls = 0

    async def acquire(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        self.calls += 1
        return await self.inner.acquire(key, emission_interval, tolerance, cost, now)

    async def adjust(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        delta: float,
        now: float | None = None,
    ) -> Decision:
        self.calls += 1
        return await self.inner.adjust(key, emission_interval, tolerance, delta, now)

    def tracked_keys(self) -> int:
        return self.inner.tracked_keys()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_async_store_path_is_exact_too(clock: ManualClock) -> None:
    store = AsyncOnlyStore(clock)
    tenant = Tenant("t", rpm=2, tpm=100, max_concurrency=10)
    g = TenantGuards([tenant], store, clock=clock)
    first = await g.admit(tenant, 60)
    assert store.calls == 2
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 60)
    assert (info.value.reason, info.value.retry_after) == ("tenant_tpm", pytest.approx(12.0))
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 101)
    assert (info.value.reason, info.value.retry_after) == ("tenant_tpm_too_large", None)
    await first.settle(20)  # 40 refunded
    await g.admit(tenant, 80)
    with pytest.raises(RateLimited) as info:
        await g.admit(tenant, 1)
    assert info.value.reason == "tenant_rpm"
    assert info.value.retry_after == pytest.approx(30.0)
    with pytest.raises(TypeError):
        g.admit_nowait(tenant, 1)
