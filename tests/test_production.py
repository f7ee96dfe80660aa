"""The production profile for real: collectstatic, gunicorn, whitenoise, HTTPS-only headers."""
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

from tests.services import ROOT, free_port, stop, wait_for_port


def _get(url: str, **headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_gunicorn_serves_the_app_and_whitenoise_the_static_files(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
           "DJANGO_SETTINGS_MODULE": "config.production",
           "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "TASK_CHAIN_VAR_DIR": str(tmp_path),
           "DJANGO_SECURE_SSL_REDIRECT": "0"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env,
                   check=True, timeout=300)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        status, headers, body = _get(f"{base}/admin/login/", **{"X-Forwarded-Proto": "https"})
        assert status == 200 and b"Task Chain" in body
        assert "max-age=31536000" in headers.get("Strict-Transport-Security", "")
        assert headers.get("X-Frame-Options") == "DENY"
        css = [line for line in body.decode().split('"') if line.startswith("/static/")
               and line.endswith(".css")]
        assert css and all("/static/admin/css/" in href for href in css)
        icon = [part for part in body.decode().split('"') if part.startswith("/static/config/")]
        assert icon and icon[0].endswith(".svg") and icon[0] != "/static/config/favicon.svg"
        # The app's own files ship inside its package, collected and hashed with the rest.
        manifest = json.loads((tmp_path / "staticfiles" / "staticfiles.json").read_text())
        for name in ("chains/admin.css", "chains/chain_builder.js", css[0][len("/static/"):]):
            hashed = manifest["paths"].get(name, name)
            status, headers, _ = _get(f"{base}/static/{hashed}")
            assert status == 200 and "max-age" in headers.get("Cache-Control", ""), name
        assert manifest["paths"]["chains/admin.css"] != "chains/admin.css"
        assert _get(f"{base}/tasks", **{"X-Forwarded-Proto": "https"})[0] == 401
    finally:
        stop(server)
        log.close()
