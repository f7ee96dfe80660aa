"""Production profile: DJANGO_SETTINGS_MODULE=config.production. Everything in config.settings,
with debug off, a secret key that must be given, HTTPS-only cookies and headers, and static
files served by whitenoise (run it under gunicorn)."""
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_str
from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to 50 or more random characters")

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
# Trying the profile locally over plain http: DJANGO_SECURE_SSL_REDIRECT=0,
# DJANGO_SECURE_COOKIES=0 and DJANGO_SECURE_HSTS_SECONDS=0 (README, "Production locally").
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

# gunicorn serves the app; whitenoise serves the collected static files (admin CSS and JS,
# the chain builder) with far-future caching: `manage.py collectstatic` once per release.
MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
