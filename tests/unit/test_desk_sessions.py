"""Desk session rules: cookie attributes, expiry, CSRF and origin checks, sign-in redirects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra import sessions
from streams.web.desk import page_html, safe_next

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_cookie_is_httponly_strict_and_secure_only_over_tls() -> None:
    plain = sessions.cookie_header("abc", secure=False)
    tls = sessions.cookie_header("abc", secure=True)
    for header in (plain, tls):
        parts = [p.strip() for p in header.split(";")]
        assert parts[0] == f"{sessions.COOKIE}=abc"
        assert "HttpOnly" in parts and "SameSite=Strict" in parts and "Path=/" in parts
        assert not any(p.lower().startswith("max-age") for p in parts)  # a browser session
    assert "Secure" not in plain.split("; ")
    assert "Secure" in tls.split("; ")


def test_clearing_the_cookie_expires_it_now() -> None:
    header = sessions.clear_cookie_header(secure=True)
    assert header.startswith(f"{sessions.COOKIE}=;")
    assert "Max-Age=0" in header and "Secure" in header


def test_session_lives_until_idle_or_absolute_end() -> None:
    expires = T0 + sessions.MAX_AGE
    assert sessions.is_live(T0, T0, expires, T0 + timedelta(minutes=5))
    # idle: no request for longer than IDLE
    assert not sessions.is_live(T0, T0, expires, T0 + sessions.IDLE + timedelta(seconds=1))
    # kept alive by requests, but never past the absolute end
    late = expires - timedelta(minutes=1)
    assert sessions.is_live(T0, late, expires, expires - timedelta(seconds=1))
    assert not sessions.is_live(T0, late, expires, expires)
    # a session from the future (clock trouble) is not live
    assert not sessions.is_live(T0 + timedelta(hours=1), T0, expires, T0)


def test_session_ends_at_the_earlier_of_idle_and_absolute() -> None:
    s = sessions.Session(None, "c", "a", T0, T0, T0 + sessions.MAX_AGE)  # type: ignore[arg-type]
    assert s.ends_at() == T0 + sessions.IDLE
    s = sessions.Session(None, "c", "a", T0, T0 + timedelta(hours=11), T0 + sessions.MAX_AGE)  # type: ignore[arg-type]
    assert s.ends_at() == T0 + sessions.MAX_AGE


def test_csrf_needed_for_writes_only_and_must_match() -> None:
    assert sessions.csrf_ok("secret", "GET", None)
    assert sessions.csrf_ok("secret", "head", None)
    assert not sessions.csrf_ok("secret", "POST", None)
    assert not sessions.csrf_ok("secret", "POST", "")
    assert not sessions.csrf_ok("secret", "POST", "secreT")
    assert not sessions.csrf_ok("secret", "DELETE", "other")
    assert not sessions.csrf_ok("", "POST", "")
    assert sessions.csrf_ok("secret", "POST", "secret")


def test_writes_from_another_origin_are_refused() -> None:
    assert sessions.origin_ok("POST", None, "desk.example:8080")  # no Origin header sent
    assert sessions.origin_ok("POST", "https://desk.example:8080", "desk.example:8080")
    assert sessions.origin_ok("GET", "https://evil.example", "desk.example")
    assert not sessions.origin_ok("POST", "https://evil.example", "desk.example")
    assert not sessions.origin_ok("POST", "null", "desk.example")
    assert not sessions.origin_ok("POST", "https://desk.example.evil.example", "desk.example")


def test_actor_is_trimmed_and_bounded() -> None:
    assert sessions.clean_actor("  officer-17 ") == "officer-17"
    assert sessions.clean_actor("") is None
    assert sessions.clean_actor("   ") is None
    assert sessions.clean_actor("x" * (sessions.ACTOR_MAX + 1)) is None
    assert sessions.clean_actor("a\nb") is None
    assert sessions.clean_actor(None) is None


def test_session_ids_are_stored_hashed() -> None:
    h = sessions.hash_session("abc")
    assert h != "abc" and len(h) == 64 and h == sessions.hash_session("abc")


def test_sign_in_only_redirects_inside_the_desk() -> None:
    assert safe_next("/desk/cases/C-1") == "/desk/cases/C-1"
    assert safe_next("/desk?post_id=HQ") == "/desk?post_id=HQ"
    assert safe_next("https://evil.example/desk") == "/desk"
    assert safe_next("//evil.example/desk") == "/desk"
    assert safe_next("/api/cases") == "/desk"
    assert safe_next(None) == "/desk"


def test_page_escapes_what_it_echoes() -> None:
    html = page_html(view="signin", next_path='/desk"><script>x</script>', error="token")
    assert "<script>x</script>" not in html
    assert 'data-view="signin"' in html and 'data-error="token"' in html
    assert "garda_" not in html  # no token in the page
