# One image for the project's own services in docker-compose.yml: the machine simulator and
# Mage (the compose file picks the command). Dependencies come from the lock (requirements.txt)
# so the image runs exactly the versions the tests ran; no secret is baked in: tokens and
# webhooks arrive as environment variables at run time.
FROM python:3.11.16-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Mage's version-control features call git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# A non-root user with a home: Mage writes ~/.gitconfig and ~/.ipython.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# The pinned dependencies first, so this slow layer is rebuilt only when the lock changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The project's packages, installed without re-resolving (the lock is the resolution). Editable,
# so influx_magic.settings.REPO_ROOT is /app as in a checkout.
COPY pyproject.toml README.md ./
COPY magic_common/ magic_common/
COPY fleetwatch/ fleetwatch/
COPY influx_magic/ influx_magic/
COPY localflux/ localflux/
COPY machine_simulator/ machine_simulator/
RUN pip install --no-deps -e .

# Mage rewrites files in its project at start-up (triggers.yaml, .file_versions), so the app
# user owns it. State, plots and Mage's database live under /data, on named volumes.
COPY --chown=app:app influx-magic/ influx-magic/
RUN mkdir -p /data/state /data/plots /data/mage && chown -R app:app /data

ENV FLEETWATCH_STATE_DIR=/data/state \
    FLEETWATCH_OUTPUT_DIR=/data/plots \
    MAGE_DATA_DIR=/data/mage

USER app

EXPOSE 5005 6789
CMD ["python", "-m", "influx_magic.mage_server", "--host", "0.0.0.0", "--port", "6789"]
