"""Sign-up, login, logout, token expiry, roles and handle squatting, on SQLite and PostgreSQL."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.auth import hash_token
from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import ApiToken, OutboxMessage, User
from core.settings import Settings
from core.topics import BY_NAME, decode

PASSWORD = "correct horse battery"


def signup(client: TestClient, handle: str, password: str = PASSWORD) -> dict:  # type: ignore[type-arg]
    return client.post("/v1/auth/signup", json={"handle": handle, "display_name": handle.title(), "password": password})  # type: ignore[no-any-return]


def _db(settings: Settings):  # type: ignore[no-untyped-def]
    return make_sessionmaker(make_engine(settings.database_url))


def test_signup_login_logout_round_trip(client: TestClient, settings: Settings) -> None:
    created = signup(client, "maya_makes")
    assert created.status_code == 201
    body = created.json()
    assert body["user"]["role"] == "user" and body["token"].startswith("cs_")
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC) + timedelta(days=29)
    auth = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/v1/me", headers=auth).json()["handle"] == "maya_makes"

    assert (
        client.post("/v1/auth/login", json={"handle": "maya_makes", "password": "wrong password!"}).status_code == 401
    )
    assert client.post("/v1/auth/login", json={"handle": "nobody_here", "password": PASSWORD}).status_code == 401
    login = client.post("/v1/auth/login", json={"handle": "@MAYA_MAKES", "password": PASSWORD})
    assert login.status_code == 200
    second = {"Authorization": f"Bearer {login.json()['token']}"}

    assert client.post("/v1/auth/logout", headers=auth).status_code == 204
    gone = client.get("/v1/me", headers=auth)
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    assert client.get("/v1/me", headers=second).status_code == 200, "logout revokes only that token"

    with session_scope(_db(settings)) as s:
        user = s.scalar(select(User).where(User.handle_key == "maya_makes"))
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        events = [decode(BY_NAME["social.events"], r.value) for r in s.scalars(select(OutboxMessage))]
        assert [e.kind for e in events] == ["user_created"]  # type: ignore[attr-defined]


def test_expired_and_tampered_tokens_are_refused(client: TestClient, settings: Settings) -> None:
    token = signup(client, "theo_films").json()["token"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "cs_", "not-even-a-token", token + "x", "cs_" + "a" * 300):
        assert client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    with session_scope(_db(settings)) as s:
        row = s.get(ApiToken, hash_token(token, settings.secret_key.get_secret_value()))
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    resp = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]


@pytest.mark.parametrize("squatter", ["MAYA_MAKES", "maya_rnakes", "rnaya_makes", "maya_mak3s", "mayamakes"])
def test_look_alike_handles_cannot_squat(client: TestClient, squatter: str) -> None:
    assert signup(client, "maya_makes").status_code == 201
    resp = signup(client, squatter)
    assert resp.status_code == 409 and "taken" in resp.json()["detail"]


@pytest.mark.parametrize("handle", ["mаya_makes", "maya\u200bmakes", "adm1n", "ADMIN", "clipstream", "x" * 31])
def test_confusable_and_reserved_handles_are_refused(client: TestClient, handle: str) -> None:
    resp = signup(client, handle)
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == "body.handle"


def test_short_password_is_refused(client: TestClient) -> None:
    resp = signup(client, "sam_draws", password="short")
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == "body.password"


def test_profile_edit_is_for_the_owner(client: TestClient) -> None:
    token = signup(client, "lena_k").json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.patch("/v1/me", json={"bio": "tiny films"}).status_code == 401
    updated = client.patch("/v1/me", json={"bio": "tiny films", "display_name": " Lena "}, headers=auth).json()
    assert updated["bio"] == "tiny films" and updated["display_name"] == "Lena"
    assert client.patch("/v1/me", json={"bio": "x" * 161}, headers=auth).status_code == 422
    assert client.get("/v1/users/lena_k").json()["bio"] == "tiny films"


def test_only_admins_grant_roles(client: TestClient, settings: Settings) -> None:
    admin = signup(client, "root_admin_1").json()
    user = signup(client, "plain_user").json()
    with session_scope(_db(settings)) as s:
        s.get(User, uuid.UUID(admin["user"]["id"])).role = "admin"  # the bootstrap step `clipstream set-role` does
    as_user = {"Authorization": f"Bearer {user['token']}"}
    as_admin = {"Authorization": f"Bearer {admin['token']}"}
    assert client.put("/v1/admin/users/plain_user/role", json={"role": "admin"}, headers=as_user).status_code == 403
    assert client.put("/v1/admin/users/plain_user/role", json={"role": "reviewer"}).status_code == 401
    ok = client.put("/v1/admin/users/plain_user/role", json={"role": "reviewer"}, headers=as_admin)
    assert ok.status_code == 200 and ok.json()["role"] == "reviewer"
    assert client.put("/v1/admin/users/plain_user/role", json={"role": "god"}, headers=as_admin).status_code == 422


def test_prompt_submission_is_rate_limited_per_user(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {signup(client, 'busy_maker').json()['token']}"}
    codes = [client.post("/v1/prompts", json={"text": f"a cat {i}"}, headers=auth).status_code for i in range(11)]
    assert codes == [202] * 10 + [429]
    limited = client.post("/v1/prompts", json={"text": "one more"}, headers=auth)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json" and "prompts" in limited.json()["detail"]
    other = {"Authorization": f"Bearer {signup(client, 'calm_maker').json()['token']}"}
    assert client.post("/v1/prompts", json={"text": "a dog"}, headers=other).status_code == 202


def test_signups_are_rate_limited_per_address(client: TestClient) -> None:
    codes = [signup(client, f"new_user_{i:02d}").status_code for i in range(26)]
    assert codes[:25] == [201] * 25 and codes[25] == 429


INJECTIONS = ["'; DROP TABLE users; --", '" OR 1=1 --', "Robert'); DELETE FROM prompts;--", "%' UNION SELECT 1 --"]


@pytest.mark.parametrize("text", INJECTIONS)
def test_sql_injection_strings_are_just_text(client: TestClient, settings: Settings, text: str) -> None:
    assert signup(client, text).status_code == 422, "not a valid handle: refused, nothing written"
    made = client.post("/v1/auth/signup", json={"handle": "bobby_t", "display_name": text, "password": PASSWORD})
    assert made.status_code == 201 and made.json()["user"]["display_name"] == text.strip()
    auth = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.patch("/v1/me", json={"bio": text}, headers=auth).json()["bio"] == text.strip()
    prompt = client.post("/v1/prompts", json={"text": text}, headers=auth)
    assert prompt.status_code == 202 and prompt.json()["text"] == text.strip()
    assert client.get(f"/v1/users/{text}").status_code == 404
    assert client.post("/v1/auth/login", json={"handle": text, "password": text}).status_code in (401, 422)
    with session_scope(_db(settings)) as s:
        assert s.scalar(select(User).where(User.handle_key == "bobby_t")) is not None, "tables intact"


def _image(fmt: str, size: tuple[int, int] = (300, 200)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def test_avatar_uploads_are_verified_by_decoding(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {signup(client, 'pic_person').json()['token']}"}

    def put(data: bytes, name: str = "a.png", ctype: str = "image/png"):  # type: ignore[no-untyped-def]
        return client.put("/v1/me/avatar", files={"file": (name, data, ctype)}, headers=auth)

    assert put(b"\x89PNG" + b"\x00" * (5 * 1024 * 1024 + 10)).status_code == 413
    gif = put(_image("GIF"), "cat.png")
    assert gif.status_code == 422 and "GIF" in gif.json()["detail"], "the extension and content type are not trusted"
    assert put(b"<html>not an image</html>").status_code == 422
    assert put(_image("PNG")[:200]).status_code == 422, "truncated"
    ok = put(_image("JPEG"), "me.jpg", "image/jpeg")
    assert ok.status_code == 200 and ok.json()["avatar_url"] == "/v1/users/pic_person/avatar"
    served = client.get("/v1/users/pic_person/avatar")
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(served.content)).size == (200, 200), "cropped square"
    assert client.put("/v1/me/avatar", files={"file": ("a.png", _image("PNG"), "image/png")}).status_code == 401
