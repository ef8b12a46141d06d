# graphite-web settings for cdlab (configuration from the environment).
import os

SECRET_KEY = os.environ.get("GRAPHITE_SECRET_KEY", "cdlab-lab-only-not-a-secret")
ALLOWED_HOSTS = ["*"]
TIME_ZONE = "UTC"
STORAGE_DIR = "/var/lib/graphite"
WHISPER_DIR = "/var/lib/graphite/whisper"
STANDARD_DIRS = [WHISPER_DIR]
LOG_DIR = "/var/log/graphite"
INDEX_FILE = "/var/lib/graphite-web/index"
CARBONLINK_HOSTS = [os.environ.get("CARBONLINK", "carbon:7002")]
DATABASES = {
    "default": {
        "NAME": "/var/lib/graphite-web/graphite.db",
        "ENGINE": "django.db.backends.sqlite3",
    }
}
