"""``/console``: the admin console's pages, login and forms (see docs/gateway/console.md).

Mounted by the app factory only with ``features.console.enabled``; a reload that turns it off makes every
console path a 404 from the next request. Thin over :mod:`gateway.console.data` and the admin library
(:mod:`gateway.admin`): a login authenticates as the admin API does
(:func:`gateway.routes.admin_v1.authenticate_admin`, its failed-login limit included), each page checks the
scope the matching ``/admin/v1`` route needs, and key changes call the same
:class:`~gateway.admin.keys.KeyAdmin` methods, so they are audited the same way.

Security: the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS, path ``/console``) holds a
random id, never the key; every form carries a CSRF token (the session's, or before login a double-submit
cookie); pages are ``no-store`` (a created key's secret is shown once and never cached) under a CSP that
allows only this origin.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from gateway.admin.schemas import KeyCreate, KeyRotate, KeyUpdate
from gateway.console import charts, data
from gateway.console.bucket_cache import BucketCache
from gateway.console.sessions import (
    Session,
    Sessions,
    credential_of,
    current_principal,
    new_token,
    same_token,
)
from gateway.errors import GatewayError
from gateway.ledger import LedgerUnavailable
from gateway.reload import describe, running_config
from gateway.routes.admin_v1 import authenticate_admin, validation_error
from gateway.stores.memory import MemoryStore

if TYPE_CHECKING:
    from gateway.app import Gateway

PREFIX = "/console"
SESSION_COOKIE = "gateway_console"
LOGIN_CSRF_COOKIE = "gateway_console_login"
MAX_FORM_BYTES = 64 * 1024
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# How often a live stream re-reads the ledger: once per interval per open page, whatever the traffic, and
# never on a request's path. A comment line every KEEPALIVE_S keeps idle proxies from closing the stream.
LIVE_INTERVAL_S = 1.0
# The reads' cost grows with the ledger (the overview sums 30 days of it), so a stream never spends more
# than this share of its time on them: after a read that took t seconds it waits at least t / LIVE_SHARE.
# Measured by bench/console.py (the console open may cost production requests at most 5 % CPU).
LIVE_SHARE = 0.02
# Open streams per session (a few tabs): past it 429, so one login cannot multiply the ledger reads.
MAX_STREAMS_PER_SESSION = 8
KEEPALIVE_S = 15.0
# Live pages: their template of rows and the scope they need.
LIVE_PAGES = {"overview": "overview_rows.html", "requests": "requests_rows.html"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
NAV = (
    ("overview", PREFIX, "Overview"),
    ("keys", f"{PREFIX}/keys", "Keys"),
    ("spend", f"{PREFIX}/spend", "Spend"),
    ("routes", f"{PREFIX}/routes", "Routes"),
    ("requests", f"{PREFIX}/requests", "Requests"),
    ("config", f"{PREFIX}/config", "Config"),
)
Page = Callable[[Request], Awaitable[Response]]


class FormError(Exception):
    """A form the console cannot accept: its status and the message shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: Request) -> dict[str, str]:
    """The URL-encoded form of ``request`` (first value of each field); 400/413/415 as :class:`FormError`."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise FormError(415, "Forms must be sent as application/x-www-form-urlencoded.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "The form is too large.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "The form is not valid URL-encoded UTF-8.") from None
    return {name: values[0] for name, values in fields.items()}


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def key_spec(form: dict[str, str]) -> KeyCreate:
    """The create-key form as the admin API's :class:`KeyCreate` (a bad field raises ``ValidationError``)."""
    spec: dict[str, Any] = {"name": form.get("name", "").strip()}
    models = [m.strip() for m in form.get("models", "").split(",") if m.strip()]
    spec["models"] = "*" if models in ([], ["*"]) else models
    for field in ("rpm", "tpm"):
        if form.get(field, "").strip():
            spec[field] = form[field].strip()
    if form.get("team", "").strip():
        spec["team"] = form["team"].strip()
    if form.get("budget_usd", "").strip():
        period = form.get("budget_period") or "monthly"
        spec["budget"] = {"limit_usd": form["budget_usd"].strip(), "period": period}
    return KeyCreate.model_validate(spec)


EDITABLE = ("name", "models", "team", "rpm", "tpm", "budget_usd", "budget_period", "budget_soft_limit")


def key_form(key: dict[str, Any]) -> dict[str, str]:
    """The edit form's fields filled from a key as the admin API shows it."""
    budget = key.get("budget") or {}
    models = key.get("models")
    return {
        "name": key["name"],
        "models": "*" if models in (None, "*") else ", ".join(models),
        "team": key.get("team") or "",
        "rpm": str(key.get("rpm") or ""),
        "tpm": str(key.get("tpm") or ""),
        "budget_usd": str(budget.get("limit_usd") or ""),
        "budget_period": budget.get("period") or "monthly",
        "budget_soft_limit": str(budget.get("soft_limit") or ""),
        "etag": key.get("etag") or "",
    }


def key_change(form: dict[str, str], timezone: str | None) -> KeyUpdate:
    """The edit form as the admin API's :class:`KeyUpdate` (``PATCH /admin/v1/keys/{id}``): every field of
    the form is sent, an empty one clears it; ``timezone`` keeps the budget's own zone, which the form does
    not show. A bad field raises ``ValidationError``."""
    value = {name: form.get(name, "").strip() for name in EDITABLE}
    models = [m.strip() for m in value["models"].split(",") if m.strip()]
    change: dict[str, Any] = {
        "name": value["name"] or None,
        "models": "*" if models in ([], ["*"]) else models,
        "team": value["team"] or None,
        "rpm": value["rpm"] or None,
        "tpm": value["tpm"] or None,
        "budget": None,
    }
    if value["budget_usd"]:
        budget = {"limit_usd": value["budget_usd"], "period": value["budget_period"] or "monthly"}
        if value["budget_soft_limit"]:
            budget["soft_limit"] = value["budget_soft_limit"]
        if timezone:
            budget["timezone"] = timezone
        change["budget"] = budget
    elif value["budget_soft_limit"]:
        change["budget"] = {"soft_limit": value["budget_soft_limit"]}  # refused: names budget.limit_usd
    return KeyUpdate.model_validate(change)


def live_interval(read_s: float) -> float:
    """Seconds a live stream waits after a read that took ``read_s``: a second, or longer when reads are slow,
    so that it spends at most ``LIVE_SHARE`` of its time reading."""
    return max(LIVE_INTERVAL_S, read_s / LIVE_SHARE)


def chart_window(request: Request) -> charts.Window:
    """The overview's chart window of the query (``?window=hour|day|month``); a bad one is a 400 naming it."""
    try:
        return charts.window_of(request.query_params.get("window"))
    except ValueError as exc:
        raise GatewayError(400, str(exc), "invalid_request_error", "invalid_window") from None


def router(gateway: Gateway) -> APIRouter:
    """The ``/console`` router over ``gateway`` (its sessions live as long as this router)."""
    console = APIRouter(prefix=PREFIX, include_in_schema=False)
    settings = lambda: gateway.config.features.console  # noqa: E731 - read at each use: reloads change it
    # Sessions in the state store when it is shared (Redis: replicas share logins), each checked against the
    # running config. The memory store is not shared, and its LRU bound is shared with the response cache,
    # whose churn would evict sessions: there, sessions get a memory store of their own, max_sessions big.
    own_store = MemoryStore(max_entries=settings().max_sessions)
    sessions = Sessions(
        lambda: own_store if isinstance(gateway.store, MemoryStore) else gateway.store,
        lambda: settings().session_ttl_s,
        lambda principal, credential: current_principal(gateway.config, principal, credential),
    )
    # Closed time buckets read once, shared by every viewer's page loads and live streams.
    usage_reads = BucketCache()
    templates = Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    static = resources.files("gateway.console").joinpath("static")
    streams: dict[str, int] = {}  # session id -> open live streams (counted while their generator runs)

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(nav=NAV, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def check_enabled() -> None:
        if not settings().enabled:
            raise GatewayError(404, "Not Found", "invalid_request_error", "not_found")

    async def session_of(request: Request) -> Session | None:
        session = await sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            request.scope["state"]["key"] = session.principal.name  # the access log names the admin
        return session

    def login_page(request: Request, status: int = 200, error: str | None = None, **headers: str) -> Response:
        token = new_token()
        response = render("login.html", status, csrf=token, error=error, title="Log in")
        response.headers.update(headers)
        _cookie(response, request, LOGIN_CSRF_COOKIE, token, 3600)
        return response

    def page(name: str, scope: str, build: Callable[[Request, Session], Awaitable[dict[str, Any]]]) -> Page:
        """A GET page needing a session holding ``scope``; ``build`` returns its template's context."""

        async def handler(request: Request) -> Response:
            check_enabled()
            session = await session_of(request)
            if session is None:
                return RedirectResponse(f"{PREFIX}/login", status_code=303, headers=SECURITY_HEADERS)
            return await show(request, session, name, scope, build)

        return handler

    async def show(
        request: Request,
        session: Session,
        name: str,
        scope: str,
        build: Callable[[Request, Session], Awaitable[dict[str, Any]]],
        status: int = 200,
        **extra: Any,
    ) -> Response:
        common = {"session": session, "csrf": session.csrf, "active": name, "title": name.capitalize()}
        if not session.principal.may(scope):
            message = f"Your admin key lacks the '{scope}' scope this page needs."
            return render("error.html", 403, error=message, **common)
        if not gateway.started:
            await gateway.start()
        try:
            context = await build(request, session)
        except LedgerUnavailable as exc:
            return render("error.html", 503, error=f"Usage is unavailable: {exc}.", **common)
        except GatewayError as exc:
            return render("error.html", exc.status, error=gateway.redactor.text(exc.message), **common)
        return render(f"{name}.html", status, **{**common, **context, **extra})

    async def form_session(request: Request, scope: str | None) -> tuple[Session, dict[str, str]]:
        """The session and form of a POST: 401 without a session, 403 with a wrong CSRF token or scope."""
        check_enabled()
        session = await session_of(request)
        if session is None:
            raise FormError(401, "Your console session has ended: log in again.")
        form = await read_form(request)
        if not same_token(form.get("csrf"), session.csrf):
            raise FormError(403, "The form's CSRF token is missing or wrong: reload the page and try again.")
        if scope is not None and not session.principal.may(scope):
            raise FormError(403, f"Your admin key lacks the '{scope}' scope.")
        return session, form

    def form_error(exc: FormError) -> Response:
        return render("error.html", exc.status, error=str(exc), title="Error", session=None, active=None)

    # --- login and logout -------------------------------------------------------------------------------

    async def show_login(request: Request) -> Response:
        check_enabled()
        if await session_of(request) is not None:
            return RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
        return login_page(request)

    async def login(request: Request) -> Response:
        check_enabled()
        try:
            form = await read_form(request)
        except FormError as exc:
            return login_page(request, exc.status, str(exc))
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return login_page(request, 403, "The login form expired: try again.")
        key = form.get("key", "").strip()
        try:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            client = request.client.host if request.client else "unknown"
            principal = await authenticate_admin(gateway, headers, client)
        except GatewayError as exc:
            message = {401: "That is not an admin key.", 403: "A virtual key cannot log in to the console."}
            return login_page(request, exc.status, message.get(exc.status, exc.message), **exc.headers)
        credential = credential_of(gateway.config, principal)
        if credential is None:  # the configuration changed between authenticating and here
            return login_page(request, 401, "That is not an admin key.")
        session = await sessions.open(principal, credential)
        response = RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
        _cookie(response, request, SESSION_COOKIE, session.id, settings().session_ttl_s)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        try:
            session, _ = await form_session(request, None)
        except FormError as exc:
            return form_error(exc)
        await sessions.close(session.id)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # --- pages ------------------------------------------------------------------------------------------

    async def overview(request: Request, session: Session) -> dict[str, Any]:
        return await data.overview(gateway, chart_window(request), cache=usage_reads)

    async def keys(request: Request, session: Session) -> dict[str, Any]:
        cursor = request.query_params.get("cursor") or None
        listing = await gateway.admin.keys.page(cursor, 100)
        models = list(gateway.models)
        return {"keys": listing["data"], "next_cursor": listing["next_cursor"], "models": models}

    async def spend(request: Request, session: Session) -> dict[str, Any]:
        return await data.spend(gateway, with_teams=session.principal.may("teams:read"))

    async def routes(request: Request, session: Session) -> dict[str, Any]:
        return await data.routes(gateway)

    async def requests(request: Request, session: Session) -> dict[str, Any]:
        try:
            filters = data.RequestFilter.parse(request.query_params)
        except ValueError as exc:
            raise GatewayError(400, str(exc), "invalid_request_error", "invalid_filter") from None
        records = await data.requests(gateway, filters)
        models = list(gateway.models)
        query = urlencode({name: value for name, value in asdict(filters).items() if value})
        return {"records": records, "filters": filters, "key": filters.key, "models": models,
                "cache_statuses": data.CACHE_STATUSES, "scan": data.FILTER_SCAN, "query": query}  # fmt: skip

    # --- live updates -----------------------------------------------------------------------------------

    async def rows(which: str, filters: data.RequestFilter, window: charts.Window) -> str:
        """The live page's rows, rendered by the template the page itself includes."""
        if which == "overview":
            context = await data.overview(gateway, window, cache=usage_reads)
        else:
            records = await data.requests(gateway, filters)
            context = {"records": records, "key": filters.key, "filters": filters}
        return templates.get_template(LIVE_PAGES[which]).render(**context)

    async def live(
        session: Session, which: str, filters: data.RequestFilter, window: charts.Window
    ) -> AsyncIterator[bytes]:
        """The rows stream, counted against the session's cap while it runs (cancelled or ended)."""
        streams[session.id] = streams.get(session.id, 0) + 1
        try:
            async for chunk in live_rows(session, which, filters, window):
                yield chunk
        finally:
            streams[session.id] -= 1
            if not streams[session.id]:
                del streams[session.id]

    async def live_rows(
        session: Session, which: str, filters: data.RequestFilter, window: charts.Window
    ) -> AsyncIterator[bytes]:
        # The browser reconnects after `retry` ms when the stream ends (a shutdown, a reload turning the
        # console off); a stream of an ended session ends, and its reconnect gets 401, which stops it.
        yield b"retry: 5000\n\n"
        last, quiet = None, 0.0
        # A shutdown's drain waits for responses in flight: the stream ends within an interval of it starting
        # instead of holding the drain until its deadline.
        while (
            await sessions.get(session.id) is not None
            and settings().enabled
            and not gateway.activity.draining
        ):
            started = time.perf_counter()
            try:
                html: str | None = await rows(which, filters, window)
            except LedgerUnavailable:
                html = None  # the page shows the outage on its next load; the stream waits for the ledger
            if html is not None and html != last:
                last, quiet = html, 0.0
                yield b"event: rows\ndata: " + json.dumps({"html": html}).encode() + b"\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            interval = live_interval(time.perf_counter() - started)
            await asyncio.sleep(interval)
            quiet += interval

    async def events(request: Request) -> Response:
        """``GET /console/events?page=overview|requests[&filters]``: the page's rows as Server-Sent Events."""
        check_enabled()
        session = await session_of(request)
        if session is None:
            raise GatewayError(401, "Log in to the console first.", "authentication_error", "unauthorized")
        if not session.principal.may("usage:read"):
            message = "Your admin key lacks the 'usage:read' scope."
            raise GatewayError(403, message, "permission_error", "insufficient_scope")
        which = request.query_params.get("page", "")
        if which not in LIVE_PAGES:
            message = "page: one of overview, requests"
            raise GatewayError(400, message, "invalid_request_error", "invalid_page")
        try:
            filters = data.RequestFilter.parse(request.query_params)
        except ValueError as exc:
            raise GatewayError(400, str(exc), "invalid_request_error", "invalid_filter") from None
        window = chart_window(request)
        if streams.get(session.id, 0) >= MAX_STREAMS_PER_SESSION:
            message = f"This session has {MAX_STREAMS_PER_SESSION} live streams open already: close a page."
            raise GatewayError(429, message, "rate_limit_error", "too_many_streams")
        if not gateway.started:
            await gateway.start()
        headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}  # nginx must not buffer the stream
        stream = live(session, which, filters, window)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    async def config(request: Request, session: Session) -> dict[str, Any]:
        running = running_config(gateway)
        # The redacted config as the JSON `GET /admin/config` answers, indented for reading.
        return {**running, "config_text": json.dumps(running["config"], indent=2)}

    async def reload_config(request: Request) -> Response:
        try:
            session, _ = await form_session(request, "config:reload")
        except FormError as exc:
            return form_error(exc)
        # The same reload as `POST /admin/reload` and `/admin/v1/config/reload` (and logged the same way).
        result = await gateway.reloader.reload_and_log("console reload")
        if result.ok:
            notice = (
                f"Reloaded: version {result.previous_version} → {result.version}; {describe(result.changes)}."
                if result.status == "reloaded"
                else f"The file is unchanged: version {result.version} keeps running."
            )
            return await show(request, session, "config", "config:reload", config, notice=notice)
        # Problems name settings and files, never their values; redacted anyway, as every console error is.
        problems = [gateway.redactor.text(p) for p in result.problems]
        error = f"Not reloaded ({result.status}): version {result.version} keeps running."
        return await show(
            request, session, "config", "config:reload", config, 422, error=error, problems=problems
        )

    # --- key changes ------------------------------------------------------------------------------------

    async def create_key(request: Request) -> Response:
        try:
            session, form = await form_session(request, "keys:write")
        except FormError as exc:
            return form_error(exc)
        try:
            created = await gateway.admin.keys.create(
                key_spec(form), session.principal, request_id=request.scope["state"].get("request_id")
            )
        except ValidationError as exc:
            error = validation_error(exc.errors()).message
            return await show(request, session, "keys", "keys:read", keys, 400, error=error, form=form)
        except GatewayError as exc:
            error = gateway.redactor.text(exc.message)
            return await show(request, session, "keys", "keys:read", keys, exc.status, error=error, form=form)
        # Rendered, not redirected: the secret is in this answer only (no-store), never in a URL.
        return await show(request, session, "keys", "keys:read", keys, 201, created=created)

    async def revoke_key(request: Request) -> Response:
        try:
            session, _ = await form_session(request, "keys:write")
        except FormError as exc:
            return form_error(exc)
        key_id = request.path_params["key_id"]
        try:
            revoked = await gateway.admin.keys.revoke(
                key_id, session.principal, request_id=request.scope["state"].get("request_id")
            )
        except GatewayError as exc:
            error = gateway.redactor.text(exc.message)
            return await show(request, session, "keys", "keys:read", keys, exc.status, error=error)
        return await show(request, session, "keys", "keys:read", keys, notice=f"Revoked {revoked['name']}.")

    async def rotate_key(request: Request) -> Response:
        try:
            session, _ = await form_session(request, "keys:write")
        except FormError as exc:
            return form_error(exc)
        key_id = request.path_params["key_id"]
        try:
            rotated = await gateway.admin.keys.rotate(
                key_id, KeyRotate(), session.principal, request_id=request.scope["state"].get("request_id")
            )
        except GatewayError as exc:
            error = gateway.redactor.text(exc.message)
            return await show(request, session, "keys", "keys:read", keys, exc.status, error=error)
        # The new secret, once; the old one works for admin.rotation_grace_s.
        return await show(request, session, "keys", "keys:read", keys, created=rotated, rotated=True)

    def edit_context(key: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
        models = list(gateway.models)
        return {"key": key, "form": form, "models": models, "title": f"Edit {key['name']}", "active": "keys"}

    async def edit_page(request: Request, session: Session) -> dict[str, Any]:
        key = await gateway.admin.keys.get(request.path_params["key_id"])
        return edit_context(key, key_form(key))

    async def show_edit(request: Request) -> Response:
        check_enabled()
        session = await session_of(request)
        if session is None:
            return RedirectResponse(f"{PREFIX}/login", status_code=303, headers=SECURITY_HEADERS)
        return await show(request, session, "key_edit", "keys:write", edit_page)

    async def edit_key(request: Request) -> Response:
        try:
            session, form = await form_session(request, "keys:write")
        except FormError as exc:
            return form_error(exc)
        key_id = request.path_params["key_id"]

        async def again(_: Request, __: Session) -> dict[str, Any]:
            # The edit page again with what was typed, so a mistake is fixed rather than retyped.
            return edit_context(await gateway.admin.keys.get(key_id), form)

        try:
            current = await gateway.admin.keys.get(key_id)
            change = key_change(form, (current.get("budget") or {}).get("timezone"))
            # The same update as PATCH /admin/v1/keys/{id} (audited the same way); the form's ETag makes a
            # change someone else saved since the page was loaded a 412 instead of silently overwritten.
            updated = await gateway.admin.keys.update(
                key_id, change, session.principal, if_match=form.get("etag") or None,
                request_id=request.scope["state"].get("request_id"),
            )  # fmt: skip
        except ValidationError as exc:
            error = validation_error(exc.errors()).message
            return await show(request, session, "key_edit", "keys:write", again, 400, error=error)
        except GatewayError as exc:
            error = gateway.redactor.text(exc.message)
            if exc.status == 404:
                return await show(request, session, "keys", "keys:read", keys, 404, error=error)
            return await show(request, session, "key_edit", "keys:write", again, exc.status, error=error)
        notice = f"Updated {updated['name']}."
        return await show(request, session, "keys", "keys:read", keys, notice=notice)

    # --- assets -----------------------------------------------------------------------------------------

    async def asset(request: Request) -> Response:
        check_enabled()
        name = request.path_params["name"]
        if name not in STATIC or not re.fullmatch(r"[a-z0-9-]+\.[a-z]+", name):
            raise GatewayError(404, "Not Found", "invalid_request_error", "not_found")
        body = static.joinpath(name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=3600"})

    console.add_api_route("/login", show_login, methods=["GET"])
    console.add_api_route("/login", login, methods=["POST"])
    console.add_api_route("/logout", logout, methods=["POST"])
    console.add_api_route("", page("overview", "usage:read", overview), methods=["GET"])
    console.add_api_route("/keys", page("keys", "keys:read", keys), methods=["GET"])
    console.add_api_route("/keys", create_key, methods=["POST"])
    console.add_api_route("/keys/{key_id}/edit", show_edit, methods=["GET"])
    console.add_api_route("/keys/{key_id}/edit", edit_key, methods=["POST"])
    console.add_api_route("/keys/{key_id}/rotate", rotate_key, methods=["POST"])
    console.add_api_route("/keys/{key_id}/revoke", revoke_key, methods=["POST"])
    console.add_api_route("/spend", page("spend", "budgets:read", spend), methods=["GET"])
    console.add_api_route("/routes", page("routes", "routes:read", routes), methods=["GET"])
    console.add_api_route("/requests", page("requests", "usage:read", requests), methods=["GET"])
    console.add_api_route("/config", page("config", "config:reload", config), methods=["GET"])
    console.add_api_route("/config/reload", reload_config, methods=["POST"])
    console.add_api_route("/events", events, methods=["GET"])
    console.add_api_route("/static/{name}", asset, methods=["GET"])
    return console
